#!/usr/bin/env bash
# Mutation testing: how much of the library and the model the test suites really pin down.
# cargo-mutants (from crates.io, installed if missing) changes the code one mutant at a time and
# runs the tests; a mutant no test notices is "missed". Not part of CI's default run: a full run
# takes hours on two cores.
#
# Usage: scripts/mutants.sh [FILE ...]     e.g. scripts/mutants.sh src/protocol/reply.rs
#   Without FILEs: every file of the library and the model.
#   PROPTEST_CASES (default 64; in pass 3 each test's own) sets the property tests' case count,
#   AGENT_SESSIONS_VFS_CASES (default 8) the VFS suites'.
#   MUTANTS_SHARD=k/n tests every n-th mutant only (round robin: a deterministic sample across
#   all the files), e.g. 1/10.
#   MUTANTS_OUT (default target/mutants) is where results go.
#   MUTANTS_PASSES (default "loom plain pg mc") runs only the passes named; "plain" alone after a
#   "loom" run goes on from its results.
#   MUTANTS_RETEST=1 runs the plain pass (alone, unless MUTANTS_PASSES says otherwise) on exactly
#   the mutants the last plain pass in MUTANTS_OUT left missed or timed out (after new tests went
#   in; a sample stays the sample).
#
# Four passes, per mutant:
#   1. loom — files under src/protocol/ only: the mutant built with `--cfg agent_sessions_loom`
#      and the loom scenarios run against it (release, LOOM_MAX_PREEMPTIONS=2; ~15 s a mutant).
#   2. plain — every mutant pass 1 did not catch (`--iterate`): the library's unit and
#      integration tests, the property tests and the fault-injecting VFS suites (8 cases a
#      property: AGENT_SESSIONS_VFS_CASES) (`--tests`: the doc examples are left to the
#      ordinary test command, as are the Python interop tests). Files under src/engine/postgres/
#      are left to pass 3.
#   3. pg — files under src/engine/postgres/ only: built with the `postgres` feature and tested
#      against a throwaway PostgreSQL cluster the script starts (scripts/pg-cluster.sh) and
#      stops: the library's unit tests, its PostgreSQL suites (tests/postgres.rs,
#      tests/postgres_crash.rs) and the property tests' PostgreSQL targets (the SQLite targets and
#      the negative controls skipped: they test no PostgreSQL code).
#   4. mc — src/engine/postgres/decide.rs only (the multi-host rules as a pure state machine,
#      shared by the engine and the model checker): the library's unit tests and the model
#      checker (`mc`, about two minutes a run unoptimised), which explores those rules over every
#      interleaving of hosts and faults.
# Results: $MUTANTS_OUT/{loom,plain,pg,mc}/ (cargo-mutants' caught.txt, missed.txt,
# unviable.txt, timeout.txt) and a per-file summary (summary.txt): a mutant caught by any pass
# is caught.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo mutants --version >/dev/null 2>&1; then
  echo "==> installing cargo-mutants from crates.io"
  cargo install --locked cargo-mutants
fi

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  mapfile -t files < <(git ls-files 'src/*.rs' 'models/src/*.rs')
fi
out="${MUTANTS_OUT:-target/mutants}"
mkdir -p "$out"
out=$(cd "$out" && pwd)
shard=()
if [ -n "${MUTANTS_SHARD:-}" ]; then shard=(--shard "$MUTANTS_SHARD" --sharding round-robin); fi

# Protocol files go to the loom pass and, for what it leaves, to the plain pass.
loom_args=()
plain_args=()
pg_args=()
mc_args=()
for f in "${files[@]}"; do
  case "$f" in
    src/protocol/*) loom_args+=(--file "$f") plain_args+=(--file "$f") ;;
    src/engine/postgres/decide.rs) mc_args+=(--file "$f") ;;
    src/engine/postgres/*) pg_args+=(--file "$f") ;;
    *) plain_args+=(--file "$f") ;;
  esac
done

# The loom and plain passes share one scratch output dir so the second can skip what the first
# caught.
default_passes="loom plain pg mc"
if [ -n "${MUTANTS_RETEST:-}" ]; then default_passes=plain; fi
passes="${MUTANTS_PASSES:-$default_passes}"
work="$out/work"
if [[ " $passes " == *" loom "* ]]; then
  rm -rf "$work" "$out/loom" "$out/plain"
fi
mkdir -p "$work"

if [[ " $passes " == *" loom "* ]] && [ ${#loom_args[@]} -gt 0 ]; then
  echo "==> pass 1: loom scenarios against $(( ${#loom_args[@]} / 2 )) protocol file(s)"
  # The baseline is skipped: the mutated package's own tests do not run under the loom cfg (the
  # unmutated scenarios pass in the ordinary test run).
  RUSTFLAGS="--cfg agent_sessions_loom ${RUSTFLAGS:-}" LOOM_MAX_PREEMPTIONS=2 \
    CARGO_PROFILE_RELEASE_INCREMENTAL=true CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo mutants -j 1 --baseline skip --timeout 300 --build-timeout 1200 \
    --output "$work" "${loom_args[@]}" "${shard[@]}" \
    --test-package loom-tests --cargo-arg=--release || true
  cp -r "$work/mutants.out" "$out/loom"
fi

if [[ " $passes " == *" plain "* ]] && [ ${#plain_args[@]} -gt 0 ]; then
  echo "==> pass 2: the ordinary suites against $(( ${#plain_args[@]} / 2 )) file(s)"
  # After a loom pass, or a plain pass run before (e.g. to retest survivors once new tests
  # are in), only what is still missed or timed out is tested again.
  iterate=()
  plain_shard=("${shard[@]}")
  if [ -n "${MUTANTS_RETEST:-}" ]; then
    # Each survivor by its exact name (file, line, column and change).
    cat "$out/plain/missed.txt" "$out/plain/timeout.txt" 2>/dev/null >"$out/retest.txt" || true
    mapfile -t iterate < <(python3 -c 'import re, sys
for name in sys.stdin.read().splitlines():
    print("--re"); print("^" + re.escape(name) + "$")' <"$out/retest.txt")
    plain_shard=()
  elif [ -d "$work/mutants.out" ]; then
    iterate=(--iterate)
    rm -f "$out/retest.txt"
  fi
  if [ -n "${MUTANTS_RETEST:-}" ] && [ ${#iterate[@]} -eq 0 ]; then
    echo "nothing to retest"
  else
    if [ -d "$out/plain" ]; then mv "$out/plain" "$out/plain-$(date +%s)"; fi
    PROPTEST_CASES="${PROPTEST_CASES:-64}" AGENT_SESSIONS_VFS_CASES="${AGENT_SESSIONS_VFS_CASES:-8}" \
      cargo mutants -j 1 "${iterate[@]}" \
      --output "$work" "${plain_args[@]}" "${plain_shard[@]}" \
      --package agent-sessions --package agent-sessions-model \
      --test-package agent-sessions --test-package agent-sessions-model --test-package proptests \
      --test-package faultvfs \
      --cargo-test-arg=--tests -- -- --skip interop || true
    cp -r "$work/mutants.out" "$out/plain"
  fi
fi

if [[ " $passes " == *" pg "* ]] && [ ${#pg_args[@]} -gt 0 ]; then
  echo "==> pass 3: the PostgreSQL suites against $(( ${#pg_args[@]} / 2 )) file(s)"
  # shellcheck source=scripts/pg-cluster.sh
  . scripts/pg-cluster.sh
  trap pg_cluster_stop EXIT
  pg_cluster_start
  rm -rf "$out/pg" "$out/pg-work"
  # The property tests at their own case counts (PROPTEST_CASES only if set).
  pg_tests=(--lib --test=postgres --test=postgres_crash --test=state_machine
    --test=advanced_state_machine --test=linearizability --test=advanced_rules)
  pg_skips=(--skip negative --skip file_store --skip memory_store --skip full_database
    --skip concurrent_histories_are_linearizable --skip advanced_histories)
  # cargo-mutants' own baseline tests the mutated package alone, where the property tests'
  # targets do not exist: the same command, unmutated, is the baseline instead (it must pass,
  # or every mutant would count as caught). Without a baseline the time limit is fixed.
  echo "==> pass 3 baseline: the PostgreSQL suites, unmutated"
  CI=true cargo test -p agent-sessions -p proptests --features postgres "${pg_tests[@]}" \
    -- "${pg_skips[@]}"
  CI=true cargo mutants -j 1 --output "$out/pg-work" "${pg_args[@]}" "${shard[@]}" \
    --baseline skip --timeout 600 --build-timeout 1200 \
    --package agent-sessions --features postgres \
    --test-package agent-sessions --test-package proptests \
    "${pg_tests[@]/#/--cargo-test-arg=}" -- -- "${pg_skips[@]}" || true
  cp -r "$out/pg-work/mutants.out" "$out/pg"
fi

if [[ " $passes " == *" mc "* ]] && [ ${#mc_args[@]} -gt 0 ]; then
  echo "==> pass 4: the model checker against the multi-host rules"
  rm -rf "$out/mc" "$out/mc-work"
  # As in pass 3: the model checker's tests are not the mutated package's, so the unmutated
  # run is ours.
  echo "==> pass 4 baseline: the unit tests and the model checker, unmutated"
  cargo test -p agent-sessions -p mc --lib --test=check
  cargo mutants -j 1 --output "$out/mc-work" "${mc_args[@]}" "${shard[@]}" \
    --baseline skip --timeout 900 --build-timeout 1200 \
    --package agent-sessions --test-package agent-sessions --test-package mc \
    --cargo-test-arg=--lib --cargo-test-arg=--test=check || true
  cp -r "$out/mc-work/mutants.out" "$out/mc"
fi

echo "==> summary ($out/summary.txt)"
python3 - "$out" <<'EOF' | tee "$out/summary.txt"
import collections, glob, os, sys
out = sys.argv[1]
def lines(path):
    return set(open(path).read().splitlines()) if os.path.exists(path) else None
# A retest names its mutants by regex, which can match a few more than asked: count only those.
asked = lines(os.path.join(out, "retest.txt"))
latest = os.path.join(out, "plain")
def read(run, kind):
    found = lines(os.path.join(run, kind + ".txt")) or set()
    return found & asked if asked is not None and run == latest else found
# Every run counts for what it caught; the newest plain run (and the pg and mc runs, whose files
# are their own) decides what is still missed.
runs = [r for p in ("loom", "plain*", "pg", "mc") for r in sorted(glob.glob(os.path.join(out, p)))]
caught = set().union(*(read(r, "caught") for r in runs))
unviable = set().union(*(read(r, "unviable") for r in runs)) - caught
deciding = [latest] + [os.path.join(out, p) for p in ("pg", "mc")]
missed = set().union(*(read(r, "missed") for r in deciding)) - caught - unviable
timeout = set().union(*(read(r, "timeout") for r in deciding)) - caught - unviable - missed
rows = collections.defaultdict(lambda: [0, 0, 0, 0])
for i, group in enumerate((caught, missed, unviable, timeout)):
    for m in group:
        rows[m.split(":", 1)[0]][i] += 1
print(f"{'file':44} caught missed unviable timeout")
for f in sorted(rows):
    c, m, u, t = rows[f]
    print(f"{f:44} {c:6} {m:6} {u:8} {t:7}")
for m in sorted(missed):
    print("missed:", m)
for m in sorted(timeout):
    print("timeout:", m)
EOF
