"""The package's own tests: what the SDK's suite does not check — one SQLite per process with
Python's sqlite3 on the same file, writes that outlive a cancelled await, bounded descriptors,
and clear errors on bad input."""

import asyncio
import json
import os
import sqlite3

import pytest

from agent_sessions import AdvancedSQLiteSession, SQLiteSession


def run(coro):
    return asyncio.run(coro)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_python_sqlite3_on_the_same_file_while_the_store_writes(tmp_path):
    """The measured failure of two SQLite copies: a Python sqlite3 connection closing on the
    WAL file deleted -wal/-shm under the other copy, and writes were lost. With one SQLite per
    process every row must be there, seen by both."""
    path = tmp_path / "shared.db"
    writers, per_writer = 8, 40

    async def main():
        sessions = [SQLiteSession(f"w{i}", path) for i in range(writers)]
        stop = False

        async def write(i):
            for n in range(per_writer):
                await sessions[i].add_items([{"writer": i, "n": n}])

        def python_sqlite3_churn():
            # Open, read, close over and over: every close is a chance to drop the WAL.
            while not stop:
                conn = sqlite3.connect(path)
                conn.execute("SELECT count(*) FROM agent_messages").fetchone()
                conn.close()

        churn = asyncio.get_running_loop().run_in_executor(None, python_sqlite3_churn)
        await asyncio.gather(*(write(i) for i in range(writers)))
        stop = True
        await churn
        stored = [await s.get_items() for s in sessions]
        for s in sessions:
            s.close()
        return stored

    stored = run(main())
    for i, items in enumerate(stored):
        assert items == [{"writer": i, "n": n} for n in range(per_writer)]
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT session_id, message_data FROM agent_messages ORDER BY id").fetchall()
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    assert len(rows) == writers * per_writer
    # The SDK's exact text: json.dumps of each item.
    assert {data for _, data in rows} == {
        json.dumps({"writer": i, "n": n}) for i in range(writers) for n in range(per_writer)
    }


def test_a_cancelled_add_items_still_stores_the_items(tmp_path):
    async def main():
        s = SQLiteSession("c", tmp_path / "c.db")
        task = asyncio.ensure_future(s.add_items([{"role": "user", "content": "kept"}]))
        await asyncio.sleep(0)  # the request is with the pool now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The cancellation surfaced only once the write had committed.
        items = await s.get_items()
        s.close()
        return items

    assert run(main()) == [{"role": "user", "content": "kept"}]


def test_many_session_objects_keep_descriptors_constant(tmp_path):
    path = tmp_path / "many.db"

    async def open_many(n):
        sessions = [SQLiteSession(f"s{i}", path) for i in range(n)]
        await asyncio.gather(*(s.add_items([{"i": i}]) for i, s in enumerate(sessions)))
        await asyncio.gather(*(s.get_items(limit=1) for s in sessions))
        return sessions

    async def main():
        first = await open_many(10)
        with_10 = open_fds()
        more = await open_many(300)
        with_310 = open_fds()
        for s in first + more:
            s.close()
        return with_10, with_310

    with_10, with_310 = run(main())
    assert with_310 == with_10, (with_10, with_310)


def test_bad_items_raise_clear_errors_and_store_nothing(tmp_path):
    async def main():
        s = SQLiteSession("bad", tmp_path / "bad.db")
        with pytest.raises(TypeError):
            await s.add_items([{"ok": 1}, {"not json": object()}])
        with pytest.raises(ValueError, match="cannot be stored"):
            await s.add_items([{"ok": 1}, {"x": float("nan")}])
        with pytest.raises(ValueError, match="cannot be stored"):
            await s.add_items([{"big": 2**80}])
        items = await s.get_items()
        s.close()
        return items

    assert run(main()) == []


def test_closed_session_raises_the_sdk_error(tmp_path):
    async def main():
        s = SQLiteSession("x", tmp_path / "x.db")
        s.close()
        with pytest.raises(RuntimeError, match="SQLiteSession is closed"):
            await s.add_items([])
        with pytest.raises(RuntimeError, match="SQLiteSession is closed"):
            await s.get_items()

    run(main())


def test_subclassing_and_attributes(tmp_path):
    class Tagged(SQLiteSession):
        async def add_items(self, items):
            await super().add_items([dict(item, tag=self.tag) for item in items])

    async def main():
        s = Tagged("t", tmp_path / "t.db")
        s.tag = "x"
        s.session_settings = type(s.session_settings)(limit=1)
        await s.add_items([{"n": 1}, {"n": 2}])
        items = await s.get_items()
        s.close()
        return items

    assert run(main()) == [{"n": 2, "tag": "x"}]


def test_files_are_shared_with_the_sdk(tmp_path):
    agents = pytest.importorskip("agents")
    path = tmp_path / "sdk.db"

    async def main():
        ours = AdvancedSQLiteSession(session_id="u", db_path=path, create_tables=True)
        await ours.add_items([{"role": "user", "content": "héllo"}, {"role": "assistant", "content": "hi"}])
        sdk = agents.SQLiteSession("u", path)
        from_sdk = await sdk.get_items()
        await sdk.add_items([{"role": "user", "content": "from the SDK"}])
        sdk.close()
        basic = SQLiteSession("u", path)
        from_ours = await basic.get_items()
        basic.close()
        ours.close()
        return from_sdk, from_ours

    from_sdk, from_ours = run(main())
    assert from_sdk == [{"role": "user", "content": "héllo"}, {"role": "assistant", "content": "hi"}]
    assert from_ours == from_sdk + [{"role": "user", "content": "from the SDK"}]


def test_a_waiting_write_does_not_block_the_event_loop(tmp_path):
    """Another connection holds the write lock; while the store waits for it (busy timeout),
    the event loop keeps running other tasks, and the write lands once the lock is free."""
    path = tmp_path / "locked.db"

    async def main():
        s = SQLiteSession("l", path)
        await s.add_items([{"n": 0}])
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        ticker = asyncio.ensure_future(tick())
        write = asyncio.ensure_future(s.add_items([{"n": 1}]))
        await asyncio.sleep(0.3)
        assert not write.done()  # still waiting for the lock...
        during = ticks
        blocker.execute("COMMIT")
        blocker.close()
        await write
        ticker.cancel()
        items = await s.get_items()
        s.close()
        return during, items

    during, items = run(main())
    assert during >= 20  # ...while the loop ran (about 60 ticks in 0.3 s)
    assert items == [{"n": 0}, {"n": 1}]


# One SQLite per process (agent_sessions/_sqlite.py): each refusal, and the check behind it.

from agent_sessions import _native, _sqlite  # noqa: E402


def test_the_extension_runs_on_the_interpreters_own_sqlite():
    libs = _sqlite.mapped_libsqlite3(open("/proc/self/maps").read())
    assert len(libs) == 1, libs
    import ctypes

    own = ctypes.CDLL(libs[0], mode=os.RTLD_NOLOAD)
    assert _native.sqlite_entry() == ctypes.cast(own.sqlite3_libversion, ctypes.c_void_p).value


def test_maps_parsing_finds_each_libsqlite3_once():
    maps = (
        "7f00-7f01 r--p 00000000 08:01 11 /usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6\n"
        "7f01-7f02 r-xp 00001000 08:01 11 /usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6\n"
        "7f02-7f03 r--p 00000000 08:01 12 /opt/x/lib/libsqlite3.so\n"
        "7f03-7f04 r--p 00000000 08:01 13 /usr/lib/libsqlite3-not-a-dir/libc.so.6\n"
        "7f04-7f05 rw-p 00000000 00:00 0 \n"
    )
    assert _sqlite.mapped_libsqlite3(maps) == [
        "/opt/x/lib/libsqlite3.so",
        "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6",
    ]


def test_a_second_sqlite_in_the_process_is_refused(tmp_path):
    """A real second copy: the interpreter's libsqlite3 copied under another name and loaded
    before the package, in a fresh interpreter."""
    import subprocess
    import sys

    (lib,) = _sqlite.mapped_libsqlite3(open("/proc/self/maps").read())
    copy = tmp_path / "libsqlite3-second-copy.so"
    copy.write_bytes(open(lib, "rb").read())
    code = f"import ctypes, sqlite3; ctypes.CDLL({str(copy)!r}); import agent_sessions"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode != 0
    assert "one SQLite per process, and this one already has 2" in run.stderr, run.stderr


def test_an_interpreter_with_hidden_static_sqlite_is_refused(monkeypatch):
    monkeypatch.setattr(_sqlite, "mapped_libsqlite3", lambda _maps: [])

    class NoExports:
        def __init__(self, _name):
            pass

        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(_sqlite.ctypes, "CDLL", NoExports)
    with pytest.raises(ImportError, match="links SQLite statically without exporting it"):
        _sqlite.make_global()


def test_an_old_sqlite_is_refused(monkeypatch):
    monkeypatch.setattr(_sqlite.sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(_sqlite.sqlite3, "sqlite_version", "3.34.1")
    with pytest.raises(ImportError, match=r"needs SQLite 3\.35\.0 or newer.*uses SQLite 3\.34\.1"):
        _sqlite.make_global()


def test_an_extension_bound_to_another_sqlite_is_refused():
    class Elsewhere:
        @staticmethod
        def sqlite_entry():
            return 1

    with pytest.raises(ImportError, match="different SQLite"):
        _sqlite.check(Elsewhere, _native.sqlite_entry())


def test_sqlites_own_functions_win_over_the_extensions_fallbacks():
    """The extension defines sqlite3_changes64 and sqlite3_error_offset for SQLite before
    3.37/3.38 (src/sqlite_link.rs); a SQLite that has them must be the one called."""
    import subprocess
    import sys

    env = dict(os.environ, LD_DEBUG="bindings")
    run = subprocess.run(
        [sys.executable, "-c", "import agent_sessions"], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    targets = {}
    for line in run.stderr.splitlines():
        if "_native" in line.split(" to ")[0] and "`sqlite3_" in line:
            symbol = line.rsplit("`", 1)[1].rstrip("'")
            targets[symbol] = line.split(" to ")[1].split()[0]
    (lib,) = _sqlite.mapped_libsqlite3(open("/proc/self/maps").read())
    for symbol, since in [("sqlite3_changes64", (3, 37)), ("sqlite3_error_offset", (3, 38))]:
        own = sqlite3.sqlite_version_info[:2] >= since
        bound = os.path.realpath(targets[symbol])
        assert (bound == lib) == own, f"{symbol} bound to {bound} on SQLite {sqlite3.sqlite_version}"
    assert os.path.realpath(targets["sqlite3_step"]) == lib
