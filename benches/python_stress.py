"""The same stress workload as `agent-sessions stress`, on the Python SDK's SQLiteSession.

W writer tasks each loop `add_items([one item])`, R reader tasks loop `get_items(limit)`, for a
fixed duration, on one shared session (or one session object per writer). Prints one JSON
object. Usage: python python_stress.py DB [--writers 30] [--readers 10] [--duration 30]
[--limit 20] [--layout single|per-writer] [--advanced]
"""

import argparse
import asyncio
import json
import time


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("db")
    p.add_argument("--writers", type=int, default=30)
    p.add_argument("--readers", type=int, default=10)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--layout", choices=["single", "per-writer"], default="single")
    p.add_argument("--advanced", action="store_true")
    a = p.parse_args()

    if a.advanced:
        from agents.extensions.memory import AdvancedSQLiteSession

        def make(sid: str):
            return AdvancedSQLiteSession(session_id=sid, db_path=a.db, create_tables=True)
    else:
        from agents import SQLiteSession

        def make(sid: str):
            return SQLiteSession(sid, a.db)

    shared = make("stress")
    sessions = [shared] if a.layout == "single" else [make(f"stress-w{w}") for w in range(a.writers)]
    writes = reads = errors = 0
    deadline = time.monotonic() + a.duration

    async def writer(w: int) -> None:
        nonlocal writes, errors
        s = sessions[w % len(sessions)]
        i = 0
        while time.monotonic() < deadline:
            try:
                await s.add_items([{"role": "user", "content": f"writer {w} message {i}"}])
                writes += 1
            except Exception:
                errors += 1
            i += 1

    async def reader(r: int) -> None:
        nonlocal reads, errors
        s = sessions[r % len(sessions)]
        while time.monotonic() < deadline:
            try:
                await s.get_items(a.limit)
                reads += 1
            except Exception:
                errors += 1

    start = time.monotonic()
    await asyncio.gather(*(writer(w) for w in range(a.writers)), *(reader(r) for r in range(a.readers)))
    elapsed = time.monotonic() - start
    print(json.dumps({"writes": writes, "reads": reads, "errors": errors,
                      "writes_per_sec": writes / elapsed, "reads_per_sec": reads / elapsed}))


asyncio.run(main())
