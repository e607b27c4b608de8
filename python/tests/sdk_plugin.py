"""A pytest plugin that runs the OpenAI Agents SDK's own session tests against this package.

Loaded with ``-p sdk_plugin`` before any test module is imported, it puts
``agent_sessions.SQLiteSession`` / ``AdvancedSQLiteSession`` where the SDK's tests import the
SDK's classes from (``agents``, ``agents.memory``, ``agents.extensions.memory``). The SDK's own
modules keep their classes, so nothing else of the SDK changes.

Tests of the SDK's private internals are deselected: see ``NOT_APPLICABLE`` below (the same list,
with reasons, is in the package README).
"""

import os

import agents
import agents.extensions.memory
import agents.memory

import agent_sessions

NOT_APPLICABLE_FILE = os.path.join(os.path.dirname(__file__), "sdk_not_applicable.txt")


def _not_applicable():
    """``test name -> reason`` from sdk_not_applicable.txt (``name  reason`` per line)."""
    out = {}
    with open(NOT_APPLICABLE_FILE, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(" ")
                out[name] = reason.strip()
    return out


def pytest_configure(config):
    agents.SQLiteSession = agent_sessions.SQLiteSession
    agents.memory.SQLiteSession = agent_sessions.SQLiteSession
    agents.extensions.memory.AdvancedSQLiteSession = agent_sessions.AdvancedSQLiteSession


def pytest_collection_modifyitems(config, items):
    skip = _not_applicable()
    selected, deselected = [], []
    for item in items:
        name = item.originalname if hasattr(item, "originalname") else item.name
        (deselected if name in skip else selected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def pytest_report_header(config):
    return (
        f"agent_sessions {agent_sessions.__version__}: SQLiteSession/AdvancedSQLiteSession swapped in; "
        f"{len(_not_applicable())} tests of SDK internals deselected ({NOT_APPLICABLE_FILE})"
    )
