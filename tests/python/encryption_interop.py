#!/usr/bin/env python3
"""Drive the real OpenAI Agents SDK ``EncryptedSession`` for ``tests/encryption.rs``.

Needs ``openai-agents==0.24.0`` and ``cryptography`` (the SDK's ``encrypt`` extra). Every
command prints one line of JSON (``json.dumps`` defaults, so ASCII) on stdout.

Commands:

  version      print the installed openai-agents version (fails if cryptography is missing)
  run SPEC     run the scenario in the JSON file SPEC and print one result per operation:
               ``{"ok": value}`` or ``{"error": "ExceptionName"}``

SPEC is ``{"db": PATH, "session": ID, "key": MASTER_KEY, "advanced": false, "ttl": 600,
"max_scan_items": null, "now": null, "ops": [...]}``; ``now`` (seconds) fixes ``time.time()``
(the clock Fernet stamps and checks tokens with). Operations, on an ``EncryptedSession`` over a
``SQLiteSession`` (or ``AdvancedSQLiteSession`` with ``"advanced": true``, ``create_tables``):

  {"op": "add", "items": [...]}         EncryptedSession.add_items
  {"op": "add_plain", "items": [...]}   the underlying session's add_items (no encryption)
  {"op": "get", "limit": N|null}        EncryptedSession.get_items(limit)
  {"op": "pop"}                         EncryptedSession.pop_item()
  {"op": "clear"}                       EncryptedSession.clear_session()
  {"op": "raw"}                         the underlying session's get_items(): envelopes as stored
  {"op": "plaintexts"}                  for each stored envelope, its token decrypted without
                                        TTL: {"text": plaintext, "redump": Python's own
                                        encoding of the parsed plaintext}, or null
  {"op": "now", "t": N}                 set the fixed clock to N from here on
  {"op": "keys", "keys": [...], "item": X}
                                        for each master key K[i]: a fresh EncryptedSession on
                                        session "<session>-<i>" with K[i] adds X
  {"op": "keys_get", "keys": [...]}     for each K[i]: that session's get_items() with K[i]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from importlib.metadata import version

_NOW: list[float | None] = [None]
_real_time = time.time


def _clock() -> float:
    return _NOW[0] if _NOW[0] is not None else _real_time()


# Fernet (cryptography.fernet) and the SDK read `time.time()` through the module.
time.time = _clock


def _underlying(spec: dict, session_id: str):
    if spec.get("advanced"):
        from agents.extensions.memory import AdvancedSQLiteSession

        return AdvancedSQLiteSession(session_id=session_id, db_path=spec["db"], create_tables=True)
    from agents import SQLiteSession

    return SQLiteSession(session_id, spec["db"])


def _encrypted(spec: dict, underlying, session_id: str, key: str):
    from agents.extensions.memory import EncryptedSession

    return EncryptedSession(
        session_id=session_id,
        underlying_session=underlying,
        encryption_key=key,
        ttl=spec.get("ttl", 600),
        max_scan_items=spec.get("max_scan_items"),
    )


async def _run(spec: dict) -> list:
    from agents.extensions.memory.encrypt_session import _is_encrypted_envelope, _to_json_bytes

    if spec.get("now") is not None:
        _NOW[0] = float(spec["now"])
    session_id = spec["session"]
    underlying = _underlying(spec, session_id)
    session = _encrypted(spec, underlying, session_id, spec["key"])
    out: list = []
    for op in spec["ops"]:
        kind = op["op"]
        try:
            if kind == "add":
                await session.add_items(op["items"])
                result = None
            elif kind == "add_plain":
                await underlying.add_items(op["items"])
                result = None
            elif kind == "get":
                result = await session.get_items(op.get("limit"))
            elif kind == "pop":
                result = await session.pop_item()
            elif kind == "clear":
                await session.clear_session()
                result = None
            elif kind == "raw":
                result = await underlying.get_items()
            elif kind == "plaintexts":
                result = []
                for row in await underlying.get_items():
                    if not _is_encrypted_envelope(row):
                        result.append(None)
                        continue
                    try:
                        text = session.cipher.decrypt(row["payload"].encode()).decode()
                    except Exception:  # noqa: BLE001 - reported as "not readable"
                        result.append(None)
                        continue
                    redump = _to_json_bytes(json.loads(text)).decode()
                    result.append({"text": text, "redump": redump})
            elif kind == "now":
                _NOW[0] = float(op["t"])
                result = None
            elif kind == "keys":
                for i, key in enumerate(op["keys"]):
                    sid = f"{session_id}-{i}"
                    inner = _underlying(spec, sid)
                    await _encrypted(spec, inner, sid, key).add_items([op["item"]])
                    inner.close()
                result = None
            elif kind == "keys_get":
                result = []
                for i, key in enumerate(op["keys"]):
                    sid = f"{session_id}-{i}"
                    inner = _underlying(spec, sid)
                    result.append(await _encrypted(spec, inner, sid, key).get_items())
                    inner.close()
            else:
                raise SystemExit(f"unknown op {kind!r}")
            out.append({"ok": result})
        except SystemExit:
            raise
        except Exception as e:  # noqa: BLE001 - the test compares exception names
            out.append({"error": type(e).__name__})
    underlying.close()
    return out


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "version":
        import cryptography  # noqa: F401 - the SDK's EncryptedSession needs it

        print(json.dumps(version("openai-agents")))
    elif cmd == "run":
        with open(sys.argv[2], encoding="utf-8") as f:
            spec = json.load(f)
        print(json.dumps(asyncio.run(_run(spec))))
    else:
        raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main()
