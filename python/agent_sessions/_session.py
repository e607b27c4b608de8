"""The public classes: the SDK's signatures and return shapes around the native handles.

Everything that talks to the database goes through ``agent_sessions._native``; this module
resolves settings, encodes items exactly as the SDK does (``json.dumps``), shapes results as the
SDK returns them, and makes writes outlive a cancelled ``await``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Optional

from . import _native  # bound to the interpreter's SQLite by the package (_sqlite.py)

try:  # the SDK's own types when it is installed, so isinstance checks and settings work
    from agents.memory.session import SessionABC as _Base
    from agents.memory.session_settings import (
        SessionSettings,
        coerce_session_settings,
        resolve_session_limit,
    )
except ImportError:  # the package works without the SDK

    class _Base:  # type: ignore[no-redef]
        pass

    @dataclass
    class SessionSettings:  # type: ignore[no-redef]
        """Settings for session operations (the SDK's fields)."""

        limit: Optional[int] = None

    def coerce_session_settings(value: Any) -> SessionSettings:  # type: ignore[misc]
        if isinstance(value, SessionSettings):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {"limit"}
            if unknown:
                raise TypeError(f"unknown session settings: {sorted(unknown)}")
            return SessionSettings(**value)
        raise TypeError(f"session_settings must be SessionSettings or dict, got {value!r}")

    def resolve_session_limit(explicit: Optional[int], settings: Any) -> Optional[int]:  # type: ignore[misc]
        if explicit is not None:
            return explicit
        if settings is not None:
            return coerce_session_settings(settings).limit
        return None


def _resolve(batch: list) -> None:
    """Settle futures on their loop (called there by the completion thread, one call per batch
    of replies)."""
    for future, exception, value in batch:
        if future.done():  # cancelled by its awaiter meanwhile: the request finished anyway
            continue
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(value)


_native.init(_resolve)


def _start(method: Any, *args: Any) -> asyncio.Future:
    """Start a native request now; its future is settled from the completion thread."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    method(loop, future, *args)
    return future


async def _outcome(future: asyncio.Future) -> Any:
    """A write's outcome, even when the caller is cancelled meanwhile: the request is already
    with the pool, so the cancellation is held until the write has committed (or failed), then
    re-raised — the caller never leaves while its write is still in doubt."""
    cancelled: Optional[asyncio.CancelledError] = None
    while not future.done():
        try:
            await asyncio.wait({future})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    if cancelled is not None:
        future.exception()  # retrieved: a failure after cancellation is not logged by the loop
        raise cancelled
    return future.result()


def _dumps(items: Any) -> list:
    # The SDK stores ``json.dumps(item)``: the same accepted values, the same errors.
    return [json.dumps(item) for item in items]


class SQLiteSession(_Base):
    """The SDK's ``SQLiteSession`` on the agent-sessions store.

    Same constructor, methods, files and results. Session objects on one file share one pool:
    creating one per request or per worker costs no descriptors.
    """

    session_settings: Optional[SessionSettings] = None

    def __init__(
        self,
        session_id: str,
        db_path: Any = ":memory:",
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        session_settings: Any = None,
    ):
        self.session_id = session_id
        self.session_settings = (
            coerce_session_settings(session_settings)
            if session_settings is not None
            else SessionSettings()
        )
        self.db_path = db_path
        self.sessions_table = sessions_table
        self.messages_table = messages_table
        self._native = self._open()

    def _open(self) -> Any:
        return _native.Basic(
            str(self.session_id),
            str(self.db_path),
            _sql_name(self.sessions_table),
            _sql_name(self.messages_table),
        )

    async def get_items(self, limit: Optional[int] = None) -> list:
        """The history, oldest first; the newest ``limit`` items when a limit applies."""
        resolved = resolve_session_limit(limit, self.session_settings)
        return await _start(self._native.get_items, resolved)

    async def add_items(self, items: list) -> None:
        """Append ``items`` in one transaction."""
        await _outcome(_start(self._native.add_items, _dumps(items)))

    async def pop_item(self) -> Any:
        """Remove and return the newest item (``None`` when there is none)."""
        return await _outcome(_start(self._native.pop_item))

    async def clear_session(self) -> None:
        """Delete the session's items and its session row."""
        await _outcome(_start(self._native.clear_session))

    def close(self) -> None:
        """Close this session object; other objects on the same file go on."""
        self._native.close()


class AdvancedSQLiteSession(SQLiteSession):
    """The SDK's ``AdvancedSQLiteSession`` (turns, branches, usage) on the agent-sessions store."""

    def __init__(
        self,
        *,
        session_id: str,
        db_path: Any = ":memory:",
        create_tables: bool = False,
        logger: Optional[logging.Logger] = None,
        session_settings: Any = None,
        **kwargs: Any,
    ):
        self._create_structure_tables_on_init = create_tables
        super().__init__(
            session_id=session_id, db_path=db_path, session_settings=session_settings, **kwargs
        )
        self._logger = logger if logger is not None else logging.getLogger(__name__)

    def _open(self) -> Any:
        create = bool(self._create_structure_tables_on_init)
        if not create:
            self._require_base_tables()
        try:
            return _native.Advanced(
                str(self.session_id),
                str(self.db_path),
                _sql_name(self.sessions_table),
                _sql_name(self.messages_table),
                create,
            )
        except ValueError as exc:
            if create or "structure tables" not in str(exc):
                raise
            raise ValueError(
                f"The structure tables in {self.db_path} are missing or do not record an owner. "
                "Construct an AdvancedSQLiteSession with create_tables=True to create and claim "
                f"the structure tables before opening the database without them. ({exc})"
            ) from None

    def _require_base_tables(self) -> None:
        """Without ``create_tables`` the SDK refuses — and leaves untouched — a file that no
        table pair has claimed, or whose base tables are missing; the store would create the
        base tables before checking. Checked first with Python's sqlite3 (the same SQLite)."""
        if str(self.db_path) == ":memory:":
            return  # a fresh private database: the store's own check refuses it
        names: set = set()
        if os.path.exists(self.db_path):
            conn = sqlite3.connect(f"file:{os.fspath(self.db_path)}?mode=ro", uri=True)
            try:
                rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                names = {name.lower() for (name,) in rows}
            finally:
                conn.close()
        if "message_structure" not in names:
            raise ValueError(
                f"The `message_structure` table in {self.db_path} does not record exactly one "
                "owner foreign key for each required base-table column. Construct an "
                "AdvancedSQLiteSession with create_tables=True to create and claim the structure "
                "tables before opening the database without them."
            )
        if not {_bare(self.sessions_table).lower(), _bare(self.messages_table).lower()} <= names:
            raise ValueError(
                f"The configured base tables in {self.db_path} are missing. Construct an "
                "AdvancedSQLiteSession with create_tables=True to initialize and claim the "
                "database before opening it without table creation."
            )

    @property
    def _current_branch_id(self) -> str:
        return self._native.current_branch_id()

    async def add_items(self, items: list) -> None:
        await _outcome(_start(self._native.add_items, _dumps(items)))

    async def get_items(self, limit: Optional[int] = None, branch_id: Optional[str] = None) -> list:
        resolved = resolve_session_limit(limit, self.session_settings)
        return await _start(self._native.get_items, resolved, branch_id)

    async def store_run_usage(self, result: Any) -> None:
        """Record a run's usage on the current turn (failures are logged, as in the SDK)."""
        try:
            usage = result.context_wrapper.usage
            if usage is None:
                return
            await _outcome(
                _start(
                    self._native.record_usage,
                    usage.requests or 0,
                    usage.input_tokens or 0,
                    usage.output_tokens or 0,
                    usage.total_tokens or 0,
                    _details(getattr(usage, "input_tokens_details", None)),
                    _details(getattr(usage, "output_tokens_details", None)),
                )
            )
        except Exception as exc:
            _log_usage_failure(self._logger, exc, self.session_id)

    async def create_branch_from_turn(self, turn_number: int, branch_name: Optional[str] = None) -> str:
        if branch_name is not None and not branch_name.strip():
            raise ValueError("Branch name cannot be empty")
        source = self._native.current_branch_id()
        branch = await _outcome(
            _start(self._native.create_branch_from_turn, turn_number, branch_name)
        )
        await self._log_branch(branch, turn_number, source)
        return branch

    async def _log_branch(self, branch: str, turn_number: int, source: str) -> None:
        """The SDK's debug line for a new branch; the turn's text only where the SDK's
        model-data policy allows it (``agents._debug.DONT_LOG_MODEL_DATA``)."""
        try:
            from agents import _debug

            redacted = _debug.DONT_LOG_MODEL_DATA
        except ImportError:
            redacted = True
        if redacted:
            self._logger.debug(
                "Created branch '%s' from turn %s in '%s'", branch, turn_number, source
            )
            return
        turns = await self.get_conversation_turns(source)
        content = next((t["content"] for t in turns if t["turn"] == turn_number), "")
        self._logger.debug(
            "Created branch '%s' from turn %s ('%s') in '%s'", branch, turn_number, content, source
        )

    async def create_branch_from_content(
        self, search_term: str, branch_name: Optional[str] = None
    ) -> str:
        if branch_name is not None and not branch_name.strip():
            raise ValueError("Branch name cannot be empty")
        return await _outcome(
            _start(self._native.create_branch_from_content, search_term, branch_name)
        )

    async def switch_to_branch(self, branch_id: str) -> None:
        await _outcome(_start(self._native.switch_to_branch, branch_id))

    async def delete_branch(self, branch_id: str, force: bool = False) -> None:
        await _outcome(_start(self._native.delete_branch, branch_id, force))

    async def list_branches(self) -> list:
        return await _start(self._native.list_branches)

    async def get_conversation_turns(self, branch_id: Optional[str] = None) -> list:
        return await _start(self._native.get_conversation_turns, branch_id)

    async def find_turns_by_content(self, search_term: str, branch_id: Optional[str] = None) -> list:
        return await _start(self._native.find_turns_by_content, search_term, branch_id)

    async def get_conversation_by_turns(self, branch_id: Optional[str] = None) -> dict:
        groups = await _start(self._native.get_conversation_by_turns, branch_id)
        return {group["turn"]: group["items"] for group in groups}

    async def get_tool_usage(self, branch_id: Optional[str] = None) -> list:
        rows = await _start(self._native.get_tool_usage, branch_id)
        return [(r["tool_name"], r["usage_count"], r["user_turn_number"]) for r in rows]

    async def get_session_usage(self, branch_id: Optional[str] = None) -> Optional[dict]:
        return await _start(self._native.get_session_usage, branch_id)

    async def get_turn_usage(
        self, user_turn_number: Optional[int] = None, branch_id: Optional[str] = None
    ) -> Any:
        rows = await _start(self._native.get_turn_usage, user_turn_number, branch_id)
        if user_turn_number is None:
            return rows
        if not rows:
            return {}
        row = dict(rows[0])
        row.pop("user_turn_number", None)
        return row


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _sql_name(name: str) -> str:
    """A table name as the store takes it: plain ASCII identifiers as they are, anything else
    double-quoted (the SDK writes names into SQL unquoted, and SQLite accepts non-ASCII letters
    there; quoting names the same table)."""
    if _PLAIN.match(name) or (len(name) > 1 and name[0] == name[-1] == '"'):
        return name
    return '"' + name.replace('"', '""') + '"'


def _bare(name: str) -> str:
    if len(name) > 1 and name[0] == name[-1] == '"':
        return name[1:-1].replace('""', '"')
    return name


def _log_usage_failure(logger: logging.Logger, exc: Exception, session_id: str) -> None:
    """Log as the SDK does: its model-data policy decides whether the error text appears."""
    try:
        from agents.logger import log_model_action_error
    except ImportError:  # without the SDK: the type only, never the text (it may hold data)
        logger.error("Failed to store session usage: %s", type(exc).__name__)
        return
    log_model_action_error(
        logger,
        "Failed to store session usage",
        exc,
        diagnostic_extra=lambda: {"session_id": session_id},
    )


def _details(details: Any) -> Optional[str]:
    # The SDK stores ``json.dumps(details.__dict__)`` when details are present and truthy.
    if not details:
        return None
    try:
        return json.dumps(details.__dict__)
    except (TypeError, ValueError, AttributeError):
        return None
