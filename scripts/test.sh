#!/usr/bin/env bash
# The project's test command: unit, integration, doc, property and Python-interop tests, then
# the loom model-checking suite. Usage: scripts/test.sh  (env knobs: see README "Testing").
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# The interop tests run against the real Python SDK; make a venv with it unless one is given.
if [ -z "${AGENT_SESSIONS_PYTHON:-}" ]; then
  venv=target/pyenv
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import agents' 2>/dev/null; then
    step "creating $venv with openai-agents==0.24.0 (for the interop tests)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'openai-agents==0.24.0'
  fi
  export AGENT_SESSIONS_PYTHON="$PWD/$venv/bin/python"
fi

step "shim discipline: no std::sync / parking_lot / std::thread outside src/sync.rs"
if grep -rnE 'std::sync|parking_lot|std::thread|core::sync::atomic' src --include='*.rs' \
    | grep -vE '^src/sync\.rs:|^src/cli/' | grep -vE '^[^:]+:[0-9]+:\s*//'; then
  echo "error: library code above uses concurrency primitives outside src/sync.rs" >&2
  exit 1
fi

step "cargo test (workspace: unit, integration, doc, property, interop)"
cargo test --workspace --release

step "loom (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:=2}, --release, target-loom/)"
export LOOM_MAX_PREEMPTIONS
RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}" CARGO_TARGET_DIR=target-loom \
  cargo test --release -p loom-tests
