"""The seed's workload against the SDK's SQLiteSession and agent_sessions, in one run.

30 writer tasks each ``add_items([one item])`` in a loop, 10 reader tasks each
``get_items(limit=20)``, one session object per worker, all on one file, for ``--seconds``
(default 20) per implementation, under a 256-descriptor limit. Prints writes/s, reads/s,
errors, descriptors (before, peak, after closing) and checks that every acknowledged write is
in the file.

    python python/bench.py            # the full 20 s run
    python python/bench.py --seconds 2
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import resource
import sqlite3
import tempfile
import time

WRITERS, READERS, FD_LIMIT = 30, 10, 256


def fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # EMFILE: every descriptor is in use
        return FD_LIMIT


async def workload(make, path: str, seconds: float) -> dict:
    before = fds()
    writers = [make(f"w{i}", path) for i in range(WRITERS)]
    readers = [make(f"w{i % WRITERS}", path) for i in range(READERS)]
    acked: dict[str, list[str]] = collections.defaultdict(list)
    errors: collections.Counter = collections.Counter()
    reads = 0
    peak = fds()
    deadline = time.monotonic() + seconds

    async def write(i: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            content = f"w{i}-{n}"
            n += 1
            try:
                await writers[i].add_items([{"role": "user", "content": content}])
                acked[f"w{i}"].append(content)
            except Exception as e:  # counted, as a service would log and go on
                errors[f"{type(e).__name__}: {e}"] += 1

    async def read(i: int) -> None:
        nonlocal reads
        while time.monotonic() < deadline:
            try:
                await readers[i].get_items(limit=20)
                reads += 1
            except Exception as e:
                errors[f"{type(e).__name__}: {e}"] += 1

    async def sample() -> None:
        nonlocal peak
        while time.monotonic() < deadline:
            peak = max(peak, fds())
            await asyncio.sleep(0.05)

    start = time.monotonic()
    await asyncio.gather(*(write(i) for i in range(WRITERS)), *(read(i) for i in range(READERS)), sample())
    elapsed = time.monotonic() - start
    for s in writers + readers:
        try:
            s.close()
        except Exception as e:
            errors[f"close: {type(e).__name__}: {e}"] += 1
    await asyncio.sleep(0.2)  # let pools drain and close

    conn = sqlite3.connect(path)
    stored = collections.defaultdict(set)
    for sid, content in conn.execute(
        "SELECT session_id, json_extract(message_data, '$.content') FROM agent_messages"
    ):
        stored[sid].add(content)
    conn.close()
    writes = sum(len(v) for v in acked.values())
    missing = sum(1 for sid, items in acked.items() for c in items if c not in stored[sid])
    return {
        "writes": writes,
        "writes_per_s": writes / elapsed,
        "reads_per_s": reads / elapsed,
        "errors": sum(errors.values()),
        "top_error": errors.most_common(1)[0][0][:100] if errors else "",
        "fds": (before, peak, fds()),
        "missing": missing,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="per implementation (default 20)")
    ap.add_argument("--dir", default=None, help="where the database files go (default: a temp dir)")
    ap.add_argument("--only", choices=["sdk", "agent_sessions"], default=None)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(FD_LIMIT, hard), hard))

    import agents  # the SDK's SQLiteSession
    import agent_sessions

    impls = [("sdk", agents.SQLiteSession), ("agent_sessions", agent_sessions.SQLiteSession)]
    results = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        for name, cls in impls:
            if args.only and name != args.only:
                continue
            path = os.path.join(d, f"{name}.db")
            results[name] = r = asyncio.run(workload(cls, path, args.seconds))
            print(
                f"{name:>15}: {r['writes_per_s']:9.0f} writes/s {r['reads_per_s']:9.0f} reads/s "
                f"errors {r['errors']:6d}  fds before/peak/after {r['fds'][0]}/{r['fds'][1]}/{r['fds'][2]}  "
                f"acknowledged {r['writes']} missing {r['missing']}"
                + (f"  ({r['top_error']})" if r["top_error"] else ""),
                flush=True,
            )
    print(
        f"workload: {WRITERS} writers add_items([1 item]), {READERS} readers get_items(limit=20), "
        f"one session object per worker, {args.seconds:g} s each, ulimit -n {FD_LIMIT}"
    )
    if "sdk" in results and "agent_sessions" in results and results["sdk"]["writes_per_s"] > 0:
        ratio = results["agent_sessions"]["writes_per_s"] / results["sdk"]["writes_per_s"]
        print(f"agent_sessions / SDK write throughput: {ratio:.1f}x")
    ours = results.get("agent_sessions")
    if ours and (ours["errors"] or ours["missing"]):
        raise SystemExit("agent_sessions: errors or missing acknowledged writes")


if __name__ == "__main__":
    main()
