#!/usr/bin/env bash
# Mutation testing: how much of the library and the model the test suites really pin down.
# cargo-mutants (from crates.io, installed if missing) changes the code one mutant at a time and
# runs the tests; a mutant no test notices is "missed". Not part of CI's default run: a full run
# takes hours on two cores.
#
# Usage: scripts/mutants.sh [FILE ...]     e.g. scripts/mutants.sh src/protocol/reply.rs
#   Without FILEs: every file of the library and the model.
#   PROPTEST_CASES (default 64) sets the property tests' case count, AGENT_SESSIONS_VFS_CASES
#   (default 8) the VFS suites'.
#   MUTANTS_SHARD=k/n tests every n-th mutant only (round robin: a deterministic sample across
#   all the files), e.g. 1/10.
#   MUTANTS_OUT (default target/mutants) is where results go.
#   MUTANTS_PASSES (default "loom plain") runs only the passes named; "plain" alone after a
#   "loom" run goes on from its results.
#   MUTANTS_RETEST=1 runs the plain pass on exactly the mutants the last plain pass in
#   MUTANTS_OUT left missed or timed out (after new tests went in; a sample stays the sample).
#
# Two passes, per mutant:
#   1. loom — files under src/protocol/ only: the mutant built with `--cfg agent_sessions_loom`
#      and the loom scenarios run against it (release, LOOM_MAX_PREEMPTIONS=2; ~15 s a mutant).
#   2. plain — every mutant pass 1 did not catch (`--iterate`): the library's unit and
#      integration tests, the property tests and the fault-injecting VFS suites (8 cases a
#      property: AGENT_SESSIONS_VFS_CASES) (`--tests`: the doc examples are left to the
#      ordinary test command, as are the Python interop tests; the PostgreSQL engine's files are
#      not compiled without the `postgres` feature and its tests need a server: leave
#      src/engine/postgres/ out, or its mutants show up as missed).
# Results: $MUTANTS_OUT/{loom,plain}/mutants.out/ (cargo-mutants' caught.txt, missed.txt,
# unviable.txt, timeout.txt) and a per-file summary (summary.txt): a mutant caught by either pass
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

loom_args=()
for f in "${files[@]}"; do
  case "$f" in src/protocol/*) loom_args+=(--file "$f") ;; esac
done
plain_args=()
for f in "${files[@]}"; do plain_args+=(--file "$f"); done

# Both passes share one scratch output dir so the second can skip what the first caught.
passes="${MUTANTS_PASSES:-loom plain}"
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

if [[ " $passes " == *" plain "* ]]; then
  echo "==> pass 2: the ordinary suites against $(( ${#plain_args[@]} / 2 )) file(s)"
  # After a loom pass, or a plain pass run before (e.g. to retest survivors once new tests
  # are in), only what is still missed or timed out is tested again.
  iterate=()
  if [ -n "${MUTANTS_RETEST:-}" ]; then
    # Each survivor by its exact name (file, line, column and change).
    cat "$out/plain/missed.txt" "$out/plain/timeout.txt" 2>/dev/null >"$out/retest.txt" || true
    mapfile -t iterate < <(python3 -c 'import re, sys
for name in sys.stdin.read().splitlines():
    print("--re"); print("^" + re.escape(name) + "$")' <"$out/retest.txt")
    shard=()
    if [ ${#iterate[@]} -eq 0 ]; then echo "nothing to retest"; exit 0; fi
  elif [ -d "$work/mutants.out" ]; then
    iterate=(--iterate)
    rm -f "$out/retest.txt"
  fi
  if [ -d "$out/plain" ]; then mv "$out/plain" "$out/plain-$(date +%s)"; fi
  PROPTEST_CASES="${PROPTEST_CASES:-64}" AGENT_SESSIONS_VFS_CASES="${AGENT_SESSIONS_VFS_CASES:-8}" \
    cargo mutants -j 1 "${iterate[@]}" \
    --output "$work" "${plain_args[@]}" "${shard[@]}" \
    --package agent-sessions --package agent-sessions-model \
    --test-package agent-sessions --test-package agent-sessions-model --test-package proptests \
    --test-package faultvfs \
    --cargo-test-arg=--tests -- -- --skip interop || true
  cp -r "$work/mutants.out" "$out/plain"
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
# Every run counts for what it caught; the newest plain run decides what is still missed.
runs = sorted(glob.glob(os.path.join(out, "loom")) + glob.glob(os.path.join(out, "plain*")))
caught = set().union(*(read(r, "caught") for r in runs))
unviable = set().union(*(read(r, "unviable") for r in runs)) - caught
missed = read(latest, "missed") - caught - unviable
timeout = read(latest, "timeout") - caught - unviable - missed
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
