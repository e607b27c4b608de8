#!/usr/bin/env bash
# The project's test command: format, lints, docs; unit, integration, doc, property and
# Python-interop tests; the examples; then the Python package, with loom, the packaging check
# and a downstream crate beside it. Usage: scripts/test.sh  (env knobs: see the README).
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
# On exit: the second lane (below) stopped, the cluster stopped.
lane_pid=""
cleanup() {
  if [ -n "$lane_pid" ]; then pkill -P "$lane_pid" 2>/dev/null; kill "$lane_pid" 2>/dev/null || true; fi
  if declare -F pg_cluster_stop >/dev/null; then pg_cluster_stop; fi
}
trap cleanup EXIT
if [ -z "${AGENT_SESSIONS_PG_URL:-}" ]; then
  step "starting a throwaway PostgreSQL cluster (for the postgres feature's tests)"
  # shellcheck source=scripts/pg-cluster.sh
  . scripts/pg-cluster.sh
  pg_cluster_start
fi

step "format, lints (incl. the sync-shim discipline: clippy.toml), docs"
cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --quiet

# One build serves the tests and the examples: the same packages, profile and features.
build=(--workspace --release --features agent-sessions/postgres,proptests/postgres)
step "tests (workspace: unit, integration, property, interop, doc; SQLite and PostgreSQL)"
if cargo nextest --version >/dev/null 2>&1; then
  # nextest runs the binaries side by side (.config/nextest.toml); the crash tests, which
  # restart the shared server, run after the rest, and the doc tests through cargo.
  cargo nextest run "${build[@]}" -E 'not binary(postgres_crash)'
  cargo nextest run "${build[@]}" -E 'binary(postgres_crash)'
  cargo test "${build[@]}" --doc
else
  cargo test "${build[@]}"
fi

step "examples (examples/)"
cargo build "${build[@]}" --examples --quiet
for example in tokio threads advanced; do
  target/release/examples/"$example" >/dev/null
  echo "example $example: ok"
done

# A second lane beside the Python stage, which waits on one interpreter much of the time:
# loom, the packaging check and the downstream crate, one after the other, their output kept
# in a log printed once the Python stage is done. (Started beside the tests as well, even at
# the lowest priority, it slowed them more than it gained: 1,009 s in all against 930 s.)
lane_stage() {
  local now
  now=$(date +%s)
  if [ -n "${lane_name:-}" ]; then printf '  %5ds  %s (beside the Python stage)\n' $((now - lane_start)) "$lane_name" >>target/lane-times; fi
  lane_name=$*
  lane_start=$now
  if [ -n "$lane_name" ]; then printf '\n==> %s\n' "$lane_name"; fi
}
lane() {
  set -euo pipefail
  : >target/lane-times
  lane_stage "loom (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:=2}, --release, target-loom/)"
  export LOOM_MAX_PREEMPTIONS
  RUSTFLAGS="--cfg agent_sessions_loom ${RUSTFLAGS:-}" CARGO_TARGET_DIR=target-loom \
    cargo test --release -p loom-tests

  lane_stage "packaging (cargo package --workspace: every crate packaged and verified)"
  # Cargo verifies each crate against the others through a local registry overlay. It treats
  # registry crates as immutable: unpacked sources under $CARGO_HOME/registry/src/-<hash>/ and
  # compiled artifacts are reused while the version is unchanged, so a second run would verify
  # against the first run's code. Drop our crates' unpacked copies and verify in a fresh target.
  rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/agent-sessions-* target/package-verify
  CARGO_TARGET_DIR=target/package-verify \
    cargo package --workspace --allow-dirty --quiet

  # The same debug build of the dependencies serves it (ours come from paths, not packages).
  lane_stage "a downstream crate (downstream-check/: default features, tokio, no internals)"
  CARGO_TARGET_DIR=target/package-verify scripts/downstream.sh
  lane_stage ""
}
mkdir -p target
lane >target/lane.log 2>&1 &
lane_pid=$!

step "python package (python/: its crate's lints, pip wheel, its tests, the SDK's session tests)"
scripts/python.sh

step "the second lane's output: loom, packaging, a downstream crate"
lane_status=0
wait "$lane_pid" || lane_status=$?
lane_pid=""
cat target/lane.log
if [ "$lane_status" != 0 ]; then
  echo "error: the second lane (loom, packaging, downstream) failed, exit status $lane_status" >&2
  exit "$lane_status"
fi

report
cat target/lane-times
