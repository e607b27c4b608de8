#!/usr/bin/env bash
# Side by side: the same stress workload on this crate and on the Python SDK's SQLiteSession, on
# the same machine, one after the other. Usage: benches/compare.sh [DURATION] [extra stress args]
# Needs a python with openai-agents (AGENT_SESSIONS_PYTHON, default target/pyenv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-30}; shift || true
py=${AGENT_SESSIONS_PYTHON:-target/pyenv/bin/python}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
rust=$(cargo run --release --quiet -p agent-sessions-cli -- stress --writers 30 --readers 10 --limit 20 \
         --duration "$duration" --json "$@" 2>/dev/null | tail -n 1)
python=$("$py" benches/python_stress.py "$tmp/py.db" --writers 30 --readers 10 --limit 20 \
         --duration "$duration" $(printf '%s\n' "$@" | grep -x -- '--advanced' || true))
python3 - "$rust" "$python" <<'PY'
import json, sys
r, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{'':<16}{'writes/s':>12}{'reads/s':>12}")
print(f"{'agent-sessions':<16}{r['writes_per_sec']:>12.0f}{r['reads_per_sec']:>12.0f}")
print(f"{'Python SDK':<16}{p['writes_per_sec']:>12.0f}{p['reads_per_sec']:>12.0f}")
print(f"ratio (writes): {r['writes_per_sec'] / max(p['writes_per_sec'], 1e-9):.1f}x")
PY
