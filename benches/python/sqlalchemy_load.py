"""The SDK's SQLAlchemySession (asyncpg) under the benchmark workload: 30 writer tasks
add_items([one item]), one session object each, 10 reader tasks get_items(limit=20).

Usage: sqlalchemy_load.py URL SECONDS   (prints one JSON object)
"""

import asyncio
import json
import sys
import time

from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
from sqlalchemy.ext.asyncio import create_async_engine

WRITERS, READERS = 30, 10


async def main():
    url, seconds = sys.argv[1], float(sys.argv[2])
    engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1),
                                 pool_size=WRITERS + READERS)
    tables = {"sessions_table": "sdk_bench_sessions", "messages_table": "sdk_bench_messages"}
    first = SQLAlchemySession("w0", engine=engine, create_tables=True, **tables)
    await first.get_items()
    counts = {"writes": 0, "reads": 0, "errors": 0}
    deadline = time.monotonic() + seconds

    async def writer(w):
        s = SQLAlchemySession(f"w{w}", engine=engine, **tables)
        i = 0
        while time.monotonic() < deadline:
            try:
                await s.add_items([{"role": "user", "content": f"writer {w} message {i}"}])
                counts["writes"] += 1
            except Exception:
                counts["errors"] += 1
            i += 1

    async def reader(r):
        s = SQLAlchemySession(f"w{r}", engine=engine, **tables)
        while time.monotonic() < deadline:
            try:
                await s.get_items(limit=20)
                counts["reads"] += 1
            except Exception:
                counts["errors"] += 1

    start = time.monotonic()
    await asyncio.gather(*[writer(w) for w in range(WRITERS)], *[reader(r) for r in range(READERS)])
    elapsed = time.monotonic() - start
    await engine.dispose()
    print(json.dumps({"writes_per_sec": counts["writes"] / elapsed,
                      "reads_per_sec": counts["reads"] / elapsed, "errors": counts["errors"]}))


asyncio.run(main())
