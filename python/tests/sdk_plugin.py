"""A pytest plugin that runs the OpenAI Agents SDK's own session tests against this package.

Loaded with ``-p sdk_plugin`` before any test module is imported, it puts
``agent_sessions.SQLiteSession`` / ``AdvancedSQLiteSession`` where the SDK's tests import the
SDK's classes from (``agents``, ``agents.memory``, ``agents.extensions.memory``). The SDK's own
modules keep their classes, so nothing else of the SDK changes.
"""

import agents
import agents.extensions.memory
import agents.memory

import agent_sessions


def pytest_configure(config):
    agents.SQLiteSession = agent_sessions.SQLiteSession
    agents.memory.SQLiteSession = agent_sessions.SQLiteSession
    agents.extensions.memory.AdvancedSQLiteSession = agent_sessions.AdvancedSQLiteSession
