"""Writes tests/data/known_answers.json: formats shared with Python, as the OpenAI Agents SDK
(openai-agents 0.24.0) and `cryptography` produce them, so that a plain `cargo test` — with no
Python — checks this crate against them (tests/known_answers.rs, the unit tests of
src/api/encrypted.rs, and tests/interop_advanced.rs for the Advanced session: the rows its
`AdvancedSQLiteSession` writes for the steps of tests/data/advanced_steps.json, and what it
reads back).

Run once, with a Python that has openai-agents[encrypt]==0.24.0 (target/pyenv has it):
    target/pyenv/bin/python tests/python/make_known_answers.py > tests/data/known_answers.json
The output is deterministic (fixed keys, times and IVs), so rerunning it must change nothing.
"""

import asyncio
import base64
import json
import os
import sys
import tempfile

from agents.extensions.memory import encrypt_session as sdk

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import advanced_interop  # noqa: E402  (the driver of the Advanced interop tests, beside this file)

# Items whose encodings differ most easily: escapes, astral characters, floats, big integers,
# key order, nesting, empty containers.
ITEMS = [
    {"role": "user", "content": "hello"},
    {"role": "user", "content": "caf\u00e9 \u65e5\u672c \U0001f600 \u2028 \u00ff"},
    {"content": "ctl \u0000 \u001f \u007f \" \\ / </script>", "role": "assistant"},
    {"n": [0, -0.0, 1.0, 1.5e-07, 1e16, 123.456, 0.1, 2.5e-300, 1.7976931348623157e308]},
    {"ints": [9223372036854775807, -9223372036854775808, 0, -1]},
    {"z": 1, "a": {"nested": [[], {}, [{"k\u00fc": None, "t": True, "f": False}]]}},
    "just a string",
    [1, "two", {"three": 3.0}],
]

# Master keys of each form the SDK accepts: a Fernet key (url-safe base64 of 32 bytes), a raw
# string, base64 that does not decode to 32 bytes (used as raw bytes), and non-ASCII text.
MASTER_KEYS = [
    base64.urlsafe_b64encode(bytes(range(32))).decode("ascii"),
    "a high-entropy secret from the secret manager",
    "QUJD",
    "cl\u00e9-\u043a\u043b\u044e\u0447-\U0001f511",
]
SESSIONS = ["user-42", "s\u00e9ssion-\u65e5\u672c"]
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
IV = bytes(range(16, 32))


def encryption_cases():
    cases = []
    for i, master in enumerate(MASTER_KEYS):
        session = SESSIONS[i % len(SESSIONS)]
        fernet = sdk._derive_session_fernet_key(sdk._ensure_fernet_key_bytes(master), session)
        derived = fernet._signing_key + fernet._encryption_key
        for j, item in enumerate(ITEMS[:3] if i else ITEMS):
            plaintext = sdk._to_json_bytes(item)
            token = fernet._encrypt_from_parts(plaintext, NOW + j, IV).decode("ascii")
            assert fernet.decrypt_at_time(token.encode(), ttl=60, current_time=NOW + j + 30) == plaintext
            cases.append(
                {
                    "master_key": master,
                    "session_id": session,
                    "derived_key_hex": derived.hex(),
                    "item": item,
                    "plaintext": plaintext.decode("utf-8"),
                    "time": NOW + j,
                    "iv_hex": IV.hex(),
                    "token": token,
                }
            )
    return cases


# The branches read for each session (tests/interop_advanced.rs reads the same).
READS = {"conv": [None, "main", "alt", "third", "empty"], "B": [None, "main"]}


def without_times(value):
    """What depends on the clock blanked (timestamps; the branch listing order they decide)."""
    if isinstance(value, dict):
        out = {
            k: "" if k in ("timestamp", "created_at") and isinstance(v, str) else without_times(v)
            for k, v in value.items()
        }
        if isinstance(out.get("list_branches"), list):
            out["list_branches"].sort(key=lambda b: json.dumps(b["branch_id"]))
        return out
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def advanced_case():
    with open(os.path.join(HERE, "..", "data", "advanced_steps.json"), encoding="utf-8") as f:
        steps = json.load(f)
    with tempfile.TemporaryDirectory() as d:
        db = os.path.join(d, "advanced.db")
        results = asyncio.run(advanced_interop.run_steps(db, steps))
        reads = {
            session: without_times(asyncio.run(advanced_interop.read(db, session, branches)))
            for session, branches in READS.items()
        }
        return {"results": results, "rows": advanced_interop.rows(db), "reads": reads}


def main():
    data = {
        "made_with": "openai-agents 0.24.0 (agents.extensions.memory.encrypt_session), "
        "cryptography; tests/python/make_known_answers.py",
        # What SQLiteSession stores as message_data: json.dumps(item).
        "json_dumps": [{"item": item, "text": json.dumps(item)} for item in ITEMS],
        "encryption": encryption_cases(),
        # AdvancedSQLiteSession on the steps of advanced_steps.json: step results, the file's
        # rows (created_at left out), and the reads of a fresh handle (times blanked).
        "advanced": advanced_case(),
    }
    json.dump(data, sys.stdout, indent=1, ensure_ascii=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
