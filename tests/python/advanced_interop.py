#!/usr/bin/env python3
"""Drive the real OpenAI Agents SDK ``AdvancedSQLiteSession`` for ``tests/interop_advanced.rs``.

Every command prints one line of JSON (``json.dumps`` defaults) on stdout.

Commands:

  version            print the installed openai-agents version
  run DB STEPS       run the steps of the JSON file STEPS (a list of objects, see ``_step``)
                     on DB, one session object per session id (``create_tables=True``);
                     print the list of step results
  read DB SESSION B  read everything about SESSION with a fresh handle (``create_tables=False``):
                     ``list_branches``, ``get_session_usage()``, and for each branch in the
                     JSON list B (``null`` = the handle's current branch): items, turns,
                     searches, conversation by turns, tool usage, turn usage, branch usage
  rows DB            the raw file: ``sqlite_master``, every table of the default pair and the
                     structure tables (ids included, ``created_at`` left out)
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from importlib.metadata import version

SEARCH_TERMS = ["weather", "100%", "CAFÉ", "café", "role", "_bar", "ROME", "\"quoted\"", "😀"]


def _emit(value) -> None:
    sys.stdout.write(json.dumps(value))
    sys.stdout.write("\n")


def _run_result(step: dict):
    from agents import Agent, RunContextWrapper
    from agents.result import RunResult
    from agents.usage import Usage
    from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

    kwargs = {}
    if step.get("input_details") is not None:
        kwargs["input_tokens_details"] = InputTokensDetails(**step["input_details"])
    if step.get("output_details") is not None:
        kwargs["output_tokens_details"] = OutputTokensDetails(**step["output_details"])
    usage = Usage(
        requests=step["requests"],
        input_tokens=step["input_tokens"],
        output_tokens=step["output_tokens"],
        total_tokens=step["total_tokens"],
        **kwargs,
    )
    return RunResult(
        input=[],
        new_items=[],
        raw_responses=[],
        final_output=None,
        input_guardrail_results=[],
        output_guardrail_results=[],
        tool_input_guardrail_results=[],
        tool_output_guardrail_results=[],
        context_wrapper=RunContextWrapper(context=None, usage=usage),
        _last_agent=Agent(name="interop"),
    )


async def _step(sessions: dict, db: str, step: dict):
    from agents.extensions.memory.advanced_sqlite_session import AdvancedSQLiteSession

    sid = step["session"]
    if sid not in sessions:
        sessions[sid] = AdvancedSQLiteSession(session_id=sid, db_path=db, create_tables=True)
    s = sessions[sid]
    op = step["op"]
    if op == "add":
        await s.add_items(step["items"])
        return None
    if op == "usage":
        await s.store_run_usage(_run_result(step))
        return None
    if op == "branch":
        return await s.create_branch_from_turn(step["turn"], step.get("name"))
    if op == "branch_content":
        return await s.create_branch_from_content(step["term"], step.get("name"))
    if op == "switch":
        await s.switch_to_branch(step["branch"])
        return None
    if op == "delete":
        await s.delete_branch(step["branch"], step.get("force", False))
        return None
    if op == "pop":
        return await s.pop_item()
    if op == "clear":
        await s.clear_session()
        return None
    raise SystemExit(f"unknown step {op!r}")


async def run_steps(db: str, steps: list) -> list:
    """Run `steps` on `db`; the list of their results."""
    sessions: dict = {}
    results = []
    try:
        for step in steps:
            results.append(await _step(sessions, db, step))
    finally:
        for s in sessions.values():
            s.close()
    return results


async def read(db: str, session: str, branches: list) -> dict:
    """Everything a fresh handle reads about `session` (see `read` above)."""
    from agents.extensions.memory.advanced_sqlite_session import AdvancedSQLiteSession

    s = AdvancedSQLiteSession(session_id=session, db_path=db)
    try:
        out = {
            "list_branches": await s.list_branches(),
            "session_usage": await s.get_session_usage(),
            "branches": [],
        }
        for b in branches:
            out["branches"].append(
                {
                    "branch": b,
                    "items": await s.get_items(branch_id=b),
                    "items_limit_2": await s.get_items(limit=2, branch_id=b),
                    "turns": await s.get_conversation_turns(b),
                    "search": {t: await s.find_turns_by_content(t, b) for t in SEARCH_TERMS},
                    "by_turns": await s.get_conversation_by_turns(b),
                    "tools": await s.get_tool_usage(b),
                    "turn_usage": await s.get_turn_usage(branch_id=b),
                    "turn_usage_1": await s.get_turn_usage(1, b),
                    "turn_usage_99": await s.get_turn_usage(99, b),
                    "session_usage": await s.get_session_usage(b) if b else None,
                }
            )
    finally:
        s.close()
    return out


def rows(db: str) -> dict:
    """The raw file (see `rows` above)."""
    conn = sqlite3.connect(db)
    try:
        q = lambda sql: [list(r) for r in conn.execute(sql).fetchall()]  # noqa: E731
        return {
            "sqlite_master": q("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid"),
            "agent_sessions": q("SELECT session_id FROM agent_sessions ORDER BY rowid"),
            "agent_messages": q(
                "SELECT id, session_id, message_data, typeof(message_data) FROM agent_messages ORDER BY id"
            ),
            "message_structure": q(
                "SELECT id, session_id, message_id, branch_id, message_type, sequence_number, "
                "user_turn_number, branch_turn_number, tool_name FROM message_structure ORDER BY id"
            ),
            "turn_usage": q(
                "SELECT id, session_id, branch_id, user_turn_number, requests, input_tokens, "
                "output_tokens, total_tokens, input_tokens_details, output_tokens_details "
                "FROM turn_usage ORDER BY id"
            ),
            "branch_reservations": q("SELECT session_id, branch_id FROM branch_reservations ORDER BY rowid"),
            "session_clear_generations": q(
                "SELECT session_id, generation FROM session_clear_generations ORDER BY session_id"
            ),
            "sqlite_sequence": q("SELECT name, seq FROM sqlite_sequence ORDER BY rowid"),
        }
    finally:
        conn.close()


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "version":
        _emit(version("openai-agents"))
    elif cmd == "run":
        db, steps_file = args
        with open(steps_file, encoding="utf-8") as f:
            _emit(asyncio.run(run_steps(db, json.load(f))))
    elif cmd == "read":
        db, session, branches = args
        _emit(asyncio.run(read(db, session, json.loads(branches))))
    elif cmd == "rows":
        _emit(rows(*args))
    else:
        raise SystemExit(f"unknown command {cmd!r}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
