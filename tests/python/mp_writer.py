"""Writes N single-item batches to a session with the Python SDK's SQLiteSession, as fast as it
can, for the multi-process test. Usage: mp_writer.py DB SESSION N. Exit 1 on any error."""

import asyncio
import sys

from agents import SQLiteSession


async def main() -> None:
    db, session_id, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    shared = SQLiteSession("shared", db)
    own = SQLiteSession(session_id, db)
    for i in range(n):
        await own.add_items([{"writer": session_id, "i": i}])
        await shared.add_items([{"writer": session_id, "i": i}])
    own.close()
    shared.close()


asyncio.run(main())
