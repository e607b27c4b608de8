"""One SQLite per process: bind the extension to the interpreter's own SQLite, or refuse.

The extension (``agent_sessions._native``) carries no SQLite and records no dependency on a
libsqlite3: the dynamic loader binds its ``sqlite3_*`` calls, at import, to the SQLite already
in the process's global scope. Two copies of SQLite in one process would silently break each
other's POSIX locks on a shared file (closing a file in one copy drops the locks the other
holds), so :func:`load` makes sure that scope holds exactly the SQLite of Python's ``sqlite3``
module, and raises ``ImportError`` saying why where it cannot:

- ``sqlite3`` loaded a shared libsqlite3 (Debian, Ubuntu, Fedora, RHEL, pyenv, conda and most
  builds): that library is reopened with ``RTLD_GLOBAL | RTLD_NOLOAD`` — the same mapping made
  global; ``RTLD_NOLOAD`` never loads a second one.
- no shared libsqlite3, but the executable exports SQLite's functions (SQLite linked into the
  interpreter itself and exported): they are global already.
- SQLite linked statically into ``_sqlite3`` and not exported (python-build-standalone, which
  uv and rye install): refused — any SQLite the extension could bind to would be a second copy.
- more than one libsqlite3 mapped: refused, the process already has two.
- a SQLite older than :data:`MIN_VERSION`: refused.

After the import, the address the extension's ``sqlite3_libversion`` reaches must be the
interpreter's, or the import fails: the rule is checked, not assumed.
"""

import ctypes
import os
import re
import sqlite3

#: The oldest SQLite the package supports: the store's SQL uses ``RETURNING`` (3.35.0).
MIN_VERSION = (3, 35, 0)

_LIBSQLITE3 = re.compile(r"/libsqlite3[^/]*\.so[^/]*$")


def mapped_libsqlite3(maps_text):
    """The distinct libsqlite3 files a ``/proc/<pid>/maps`` text shows mapped."""
    paths = set()
    for line in maps_text.splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and _LIBSQLITE3.search(fields[5].strip()):
            paths.add(os.path.realpath(fields[5].strip()))
    return sorted(paths)


def _entry(lib):
    return ctypes.cast(lib.sqlite3_libversion, ctypes.c_void_p).value


def make_global():
    """Put the interpreter's SQLite in the global scope; return its ``sqlite3_libversion``
    address (see the module's documentation for each case)."""
    if sqlite3.sqlite_version_info < MIN_VERSION:
        raise ImportError(
            f"agent_sessions needs SQLite {'.'.join(map(str, MIN_VERSION))} or newer; this "
            f"interpreter's sqlite3 module uses SQLite {sqlite3.sqlite_version}"
        )
    try:
        with open("/proc/self/maps") as maps:
            libs = mapped_libsqlite3(maps.read())
    except OSError:
        libs = []
    if len(libs) > 1:
        raise ImportError(
            "agent_sessions needs one SQLite per process, and this one already has "
            f"{len(libs)}: {', '.join(libs)}"
        )
    if libs:
        try:
            return _entry(ctypes.CDLL(libs[0], mode=ctypes.RTLD_GLOBAL | os.RTLD_NOLOAD))
        except OSError as e:
            raise ImportError(f"cannot make {libs[0]} (Python's SQLite) global: {e}") from e
    try:
        return _entry(ctypes.CDLL(None))
    except AttributeError:
        raise ImportError(
            "agent_sessions shares the SQLite of Python's sqlite3 module, and this interpreter "
            "links SQLite statically without exporting it (as python-build-standalone builds, "
            "which uv and rye install, do); loading another SQLite would put two copies in one "
            "process, which breaks SQLite's file locks. Use an interpreter whose sqlite3 module "
            "loads a shared libsqlite3 (the system's python3, pyenv, conda, the python.org "
            "sources built on a system with libsqlite3)."
        ) from None


def check(native, expected):
    """Fail unless the extension's SQLite is the interpreter's (one copy, one address)."""
    if native.sqlite_entry() != expected:
        raise ImportError(
            "agent_sessions' extension is bound to a different SQLite than Python's sqlite3 "
            "module (two copies in one process); refusing to run"
        )
