#!/usr/bin/env python3
"""Drive the real OpenAI Agents SDK ``SQLiteSession`` for the Rust interop tests.

Used by ``tests/interop.rs``; every command prints one line of JSON (``json.dumps``
defaults, so the output is ASCII) on stdout, or nothing.

Commands (``--sessions-table``/``--messages-table`` go before the command):

  version                      print the installed openai-agents version
  init DB                      open a SQLiteSession on DB (creates the tables) and close it
  add DB SESSION BATCHES       BATCHES is a file of JSON lines, each a JSON array of items;
                               one ``add_items`` call per line, in order
  get DB SESSION [--limit N]   print ``get_items(limit)``
  pop DB SESSION [--count N]   ``pop_item()`` N times (default 1); print the popped list
  clear DB SESSION             ``clear_session()``
  dump DB                      print the raw file: ``sqlite_master`` rows, the sessions and
                               the messages tables (message_data exactly as stored, with its
                               SQLite type), read with the sqlite3 module directly
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from importlib.metadata import version


def _session(args: argparse.Namespace):
    from agents import SQLiteSession

    return SQLiteSession(
        args.session,
        args.db,
        sessions_table=args.sessions_table,
        messages_table=args.messages_table,
    )


def _emit(value) -> None:
    sys.stdout.write(json.dumps(value))
    sys.stdout.write("\n")


async def _add(args: argparse.Namespace) -> None:
    with open(args.batches, encoding="utf-8") as f:
        # split on "\n" only: str.splitlines() would also split on U+2028, U+001C, ...
        lines = [line for line in f.read().split("\n") if line.strip()]
    session = _session(args)
    try:
        for line in lines:
            batch = json.loads(line)
            if not isinstance(batch, list):
                raise SystemExit(f"a batch must be a JSON array, got {line!r}")
            await session.add_items(batch)
    finally:
        session.close()


async def _get(args: argparse.Namespace) -> None:
    session = _session(args)
    try:
        _emit(await session.get_items(args.limit))
    finally:
        session.close()


async def _pop(args: argparse.Namespace) -> None:
    session = _session(args)
    try:
        _emit([await session.pop_item() for _ in range(args.count)])
    finally:
        session.close()


async def _clear(args: argparse.Namespace) -> None:
    session = _session(args)
    try:
        await session.clear_session()
    finally:
        session.close()


def _init(args: argparse.Namespace) -> None:
    args.session = "init"
    _session(args).close()


def _dump(args: argparse.Namespace) -> None:
    conn = sqlite3.connect(args.db)
    try:
        master = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
        ).fetchall()
        names = {row[1] for row in master}
        sessions = []
        if args.sessions_table in names:
            sessions = conn.execute(
                f"SELECT session_id, created_at, updated_at FROM {args.sessions_table} "
                "ORDER BY session_id"
            ).fetchall()
        messages = []
        if args.messages_table in names:
            messages = conn.execute(
                f"SELECT id, session_id, message_data, typeof(message_data) "
                f"FROM {args.messages_table} ORDER BY id"
            ).fetchall()
        _emit(
            {
                "schema": [list(r) for r in master],
                "sessions": [list(r) for r in sessions],
                "messages": [list(r) for r in messages],
            }
        )
    finally:
        conn.close()


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions-table", default="agent_sessions")
    p.add_argument("--messages-table", default="agent_messages")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("version")
    sub.add_parser("init").add_argument("db")
    sub.add_parser("dump").add_argument("db")
    for name in ("add", "get", "pop", "clear"):
        c = sub.add_parser(name)
        c.add_argument("db")
        c.add_argument("session")
        if name == "add":
            c.add_argument("batches")
        if name == "get":
            c.add_argument("--limit", type=int, default=None)
        if name == "pop":
            c.add_argument("--count", type=int, default=1)
    args = p.parse_args(argv)

    if args.command == "version":
        _emit(version("openai-agents"))
    elif args.command == "init":
        _init(args)
    elif args.command == "dump":
        _dump(args)
    else:
        run = {"add": _add, "get": _get, "pop": _pop, "clear": _clear}[args.command]
        asyncio.run(run(args))


if __name__ == "__main__":
    main(sys.argv[1:])
