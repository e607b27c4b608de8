"""The Python side of the PostgreSQL interop tests: the SDK's SQLAlchemySession on a server.

Usage: pg_interop.py DRIVER URL TABLES COMMAND SESSION [ARG]
  DRIVER   asyncpg | psycopg (the SQLAlchemy dialect: postgresql+DRIVER://)
  URL      postgresql://user@host:port/db
  TABLES   sessions_table,messages_table
  COMMAND  add (JSON lines of batches on stdin; prints "ok" per batch)
           get (prints json.dumps of get_items())
           pop (prints json.dumps of pop_item())
           race N TAG (adds {"w": TAG, "i": i} one at a time, printing each acknowledged i)
           popn N (pops N times, printing json.dumps of each result)
"""

import asyncio
import json
import sys

from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
from sqlalchemy.ext.asyncio import create_async_engine


async def main():
    driver, url, tables, command, session_id, *rest = sys.argv[1:]
    sessions_table, messages_table = tables.split(",")
    engine = create_async_engine(url.replace("postgresql://", f"postgresql+{driver}://", 1))
    session = SQLAlchemySession(
        session_id,
        engine=engine,
        create_tables=True,
        sessions_table=sessions_table,
        messages_table=messages_table,
    )
    try:
        if command == "add":
            for line in sys.stdin:
                if line.strip():
                    await session.add_items(json.loads(line))
                    print("ok", flush=True)
        elif command == "get":
            print(json.dumps(await session.get_items()))
        elif command == "pop":
            print(json.dumps(await session.pop_item()))
        elif command == "race":
            n, tag = int(rest[0]), rest[1]
            for i in range(n):
                await session.add_items([{"w": tag, "i": i}])
                print(i, flush=True)
        elif command == "popn":
            for _ in range(int(rest[0])):
                print(json.dumps(await session.pop_item()), flush=True)
        else:
            raise SystemExit(f"unknown command {command}")
    finally:
        await engine.dispose()


asyncio.run(main())
