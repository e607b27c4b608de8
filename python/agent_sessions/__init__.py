"""The agent-sessions store as drop-in replacements for the OpenAI Agents SDK's sessions.

``SQLiteSession`` and ``AdvancedSQLiteSession`` take the SDK's constructor arguments, read and
write the same files (same tables, same JSON text) and behave the same; underneath, every
session object on one file shares one pool (a few connections, group commit), and async calls
wait without a thread per call.

    from agent_sessions import SQLiteSession
    session = SQLiteSession("user-42", "conversations.db")
"""

from . import _sqlite

_SQLITE_ENTRY = _sqlite.make_global()
from . import _native  # noqa: E402 (binds to the SQLite made global above)

_sqlite.check(_native, _SQLITE_ENTRY)
from ._session import AdvancedSQLiteSession, SessionSettings, SQLiteSession  # noqa: E402

__all__ = ["AdvancedSQLiteSession", "SQLiteSession", "SessionSettings"]
__version__ = "0.2.0"
