#!/usr/bin/env bash
# The project's test command: format, lints, docs; unit, integration, doc, property and
# Python-interop tests; the examples; the Python package; packaging; a downstream crate; then
# the loom model-checking suite. Usage: scripts/test.sh  (env knobs: see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
# No debug info in the release builds of the tests (the profile keeps it for profiling the
# benchmarks): the same tests, built faster.
export CARGO_PROFILE_RELEASE_DEBUG=0

# Each step's wall time, printed as it ends and summed up at the end (docs/ci.md keeps the table).
stage=""
stage_start=$(date +%s)
timings=()
step() {
  local now
  now=$(date +%s)
  if [ -n "$stage" ]; then timings+=("$(printf '%5ds  %s' $((now - stage_start)) "$stage")"); fi
  stage=$*
  stage_start=$now
  printf '\n==> %s\n' "$*"
}
report() {
  step ""
  printf '\nstage timings:\n'
  printf '  %s\n' "${timings[@]}"
}

# The interop tests run against the real Python SDK (its SQLite sessions, its encryption, its
# SQLAlchemySession on PostgreSQL through asyncpg and psycopg): they make the venv target/pyenv
# themselves on first use, or take AGENT_SESSIONS_PYTHON.

# The PostgreSQL tests need a server. Each test binary would start a throwaway cluster of its
# own; one shared cluster is faster. An AGENT_SESSIONS_PG_URL given from outside is used as it
# is (the tests that restart the server then do not run).
if [ -z "${AGENT_SESSIONS_PG_URL:-}" ]; then
  step "starting a throwaway PostgreSQL cluster (for the postgres feature's tests)"
  # shellcheck source=scripts/pg-cluster.sh
  . scripts/pg-cluster.sh
  trap pg_cluster_stop EXIT
  pg_cluster_start
fi

step "format, lints (incl. the sync-shim discipline: clippy.toml), docs"
cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --quiet

step "cargo test (workspace: unit, integration, doc, property, interop; SQLite and PostgreSQL)"
cargo test --workspace --release --features agent-sessions/postgres,proptests/postgres

step "examples (examples/)"
for example in tokio threads advanced; do
  cargo run --release --quiet --example "$example" >/dev/null
  echo "example $example: ok"
done

step "python package (python/: its crate's lints, pip wheel, its tests, the SDK's session tests)"
scripts/python.sh

step "packaging (cargo package --workspace: every crate meant for publishing)"
# Cargo verifies each crate against the others through a local registry overlay. It treats
# registry crates as immutable: unpacked sources under $CARGO_HOME/registry/src/-<hash>/ and
# compiled artifacts are reused while the version is unchanged, so a second run would verify
# against the first run's code. Drop our crates' unpacked copies and verify in a fresh target.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/agent-sessions-* target/package-verify
CARGO_TARGET_DIR=target/package-verify \
  cargo package --workspace --exclude loom-tests --exclude proptests --exclude faultvfs --exclude mc --allow-dirty --quiet

step "a downstream crate (downstream-check/: default features, tokio, no internals)"
scripts/downstream.sh

step "loom (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:=2}, --release, target-loom/)"
export LOOM_MAX_PREEMPTIONS
RUSTFLAGS="--cfg agent_sessions_loom ${RUSTFLAGS:-}" CARGO_TARGET_DIR=target-loom \
  cargo test --release -p loom-tests

report
