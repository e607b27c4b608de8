"""Writes N single-item batches with the Python SDK's AdvancedSQLiteSession to its own session
and to a shared one, for the multi-process test. Usage: mp_advanced_writer.py DB NAME N."""

import asyncio
import sys

from agents.extensions.memory import AdvancedSQLiteSession


async def main() -> None:
    db, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    own = AdvancedSQLiteSession(session_id=name, db_path=db, create_tables=True)
    shared = AdvancedSQLiteSession(session_id="shared", db_path=db, create_tables=True)
    for i in range(n):
        item = {"role": "user", "content": f"{name} {i}"}
        await own.add_items([item])
        await shared.add_items([item])
    own.close()
    shared.close()


asyncio.run(main())
