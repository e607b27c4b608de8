#!/usr/bin/env bash
# The Python package (python/), as its users meet it: its crate's lints; the wheel as published
# (`maturin build`: abi3, a manylinux tag `auditwheel show` accepts, no SQLite inside, none
# linked); that wheel in a fresh venv of the stock python3 running the package's tests and the
# OpenAI Agents SDK's own session tests with no environment variables; `pip install ./python`
# in another fresh venv; the oldest SQLite supported (3.35.4 passes, 3.33.0 is refused with a
# clear error); a benchmark smoke. Usage: scripts/python.sh
# Env: BENCH_SECONDS (smoke length, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# The package builds in its own target dir (python/target), the one pip's build uses too, so
# the second build is incremental; a CARGO_TARGET_DIR from outside is not the user's path.
unset CARGO_TARGET_DIR CARGO_PROFILE_RELEASE_DEBUG
work="$root/target/python-work"
mkdir -p "$work"
# What the tests see: the machine's environment without any variable of this project's or of
# its build (a user's shell has none of them).
clean_env=(env)
for var in $(compgen -e | grep -E '^(AGENT_SESSIONS_|SQLITE3_|LIBSQLITE3_|CARGO_|RUSTFLAGS|PYTHON)|^LD_' || true); do
  clean_env+=(-u "$var")
done

step() { printf '\n==> %s\n' "$*"; }
pip() { "$1" -m pip install --quiet --disable-pip-version-check "${@:2}"; }

old_sqlite() { # <libsqlite3-sys version>: $work/sqlite-<version>/libsqlite3.so.0
  local dir="$work/sqlite-$1"
  if [ ! -f "$dir/libsqlite3.so.0" ]; then
    mkdir -p "$dir"
    curl -sSfL "https://static.crates.io/crates/libsqlite3-sys/libsqlite3-sys-$1.crate" \
      | tar -xz -C "$dir" --strip-components=2 "libsqlite3-sys-$1/sqlite3/sqlite3.c"
    cc -O0 -fPIC -shared -Wl,-soname,libsqlite3.so.0 -o "$dir/libsqlite3.so.0" \
      -DSQLITE_THREADSAFE=1 -DSQLITE_ENABLE_DESERIALIZE -DSQLITE_ENABLE_JSON1 \
      "$dir/sqlite3.c" -lpthread -lm -ldl
  fi
}
# The old SQLite libraries of the floor test build in the background meanwhile (-O0: a faster
# compile, and the tests on them are short).
(old_sqlite 0.22.2 && old_sqlite 0.20.1) &
old_sqlite_jobs=$!

step "python/: cargo fmt --check, cargo clippy -D warnings"
(cd python && cargo fmt --check && cargo clippy --all-targets --quiet -- -D warnings)

step "venv with the SDK and its test dependencies (pinned as in the SDK's lock file)"
venv="$work/venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
pip "$py" 'openai-agents==0.24.0' 'openai==3.29.0' 'pytest==9.0.3' 'pytest-asyncio==1.4.0' \
  'pytest-mock' 'pytest-timeout' 'sqlalchemy' 'maturin==1.16.0' 'auditwheel==6.6.0'
echo "$(python3 --version), SQLite $("$py" -c 'import sqlite3; print(sqlite3.sqlite_version)')"

step "maturin build --release: the wheel as published, checked"
rm -rf "$work/wheels"
(cd python && "$venv/bin/maturin" build --release --quiet -i "$py" --out "$work/wheels")
wheel=$(ls "$work"/wheels/agent_sessions-*.whl)
"$venv/bin/auditwheel" show "$wheel" | tee "$work/auditwheel.txt"
grep -q 'consistent with the following platform tag: "manylinux_' <(tr '\n' ' ' <"$work/auditwheel.txt" | tr -s ' ') \
  || { echo "auditwheel does not accept a manylinux tag for $wheel" >&2; exit 1; }
"$py" - "$wheel" <<'PY'
import subprocess, sys, tempfile, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
assert "-abi3-manylinux_" in sys.argv[1], sys.argv[1]
libs = [n for n in wheel.namelist() if ".so" in n.rsplit("/", 1)[-1]]
assert len(libs) == 1 and libs[0].startswith("agent_sessions/_native"), f"unexpected libraries: {libs}"
with tempfile.TemporaryDirectory() as d:
    path = wheel.extract(libs[0], d)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, text=True).stdout
    needed = [l.split("[")[1].rstrip("]") for l in run("readelf", "-d", path).splitlines() if "(NEEDED)" in l]
    assert not any("sqlite" in n for n in needed), f"the extension links a SQLite: {needed}"
    own = sorted(l.split()[-1] for l in run("nm", "-D", "--defined-only", path).splitlines() if " sqlite3_" in l)
    assert own == ["sqlite3_changes64", "sqlite3_error_offset"], f"SQLite symbols defined: {own}"
print(f"{sys.argv[1].rsplit('/', 1)[-1]}: one extension; NEEDED {', '.join(needed)}; no SQLite inside")
PY
pip "$py" --no-deps --force-reinstall "$wheel"

step "python/tests (the package's own tests), no environment variables"
(cd "$work" && "${clean_env[@]}" "$py" -m pytest -q --no-header -p no:cacheprovider --timeout 60 \
  "$root/python/tests")

step "the SDK's session tests (openai-agents 0.24.0 sdist) against agent_sessions"
sdk="$work/openai_agents-0.24.0"
if [ ! -d "$sdk/tests" ]; then
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$work" 'openai-agents==0.24.0'
  tar -xzf "$work/openai_agents-0.24.0.tar.gz" -C "$work"
fi
sdk_tests=(tests/memory/test_session.py tests/memory/test_session_limit.py
  tests/extensions/memory/test_advanced_sqlite_session.py)
(cd "$sdk" && "${clean_env[@]}" PYTHONPATH="$root/python/tests" "$py" -m pytest -p sdk_plugin -q \
  --no-header -p no:cacheprovider --timeout 60 -rfE "${sdk_tests[@]}")

step "pip install ./python into a fresh venv of the stock python3, no environment variables"
fresh="$work/fresh-venv"
rm -rf "$fresh"
"${clean_env[@]}" python3 -m venv "$fresh"
(cd "$work" && "${clean_env[@]}" "$fresh/bin/python" -m pip install --quiet \
  --disable-pip-version-check "$root/python" 'pytest==9.0.3' 'pytest-asyncio==1.4.0' 'pytest-timeout')
(cd "$work" && "${clean_env[@]}" "$fresh/bin/python" -m pytest -q --no-header -p no:cacheprovider \
  --timeout 60 "$root/python/tests/test_package.py")

step "the oldest SQLite supported: 3.35.4 runs every test, 3.33.0 is refused"
# Shared libsqlite3.so.0 builds of the SQLite sources published in libsqlite3-sys crates
# (downloaded from crates.io), first on LD_LIBRARY_PATH for the interpreter: its sqlite3 module
# and the extension then run on that SQLite. DESERIALIZE: this interpreter's sqlite3 module
# uses sqlite3_serialize, optional before SQLite 3.36.
wait "$old_sqlite_jobs" || { echo "building the old SQLite libraries failed" >&2; exit 1; }
floor="$work/sqlite-0.22.2"  # SQLite 3.35.4
below="$work/sqlite-0.20.1"  # SQLite 3.33.0
(cd "$work" && "${clean_env[@]}" LD_LIBRARY_PATH="$floor" "$py" -c \
  'import sqlite3; assert sqlite3.sqlite_version == "3.35.4", sqlite3.sqlite_version')
(cd "$work" && "${clean_env[@]}" LD_LIBRARY_PATH="$floor" "$py" -m pytest -q --no-header \
  -p no:cacheprovider --timeout 60 "$root/python/tests")
(cd "$sdk" && "${clean_env[@]}" LD_LIBRARY_PATH="$floor" PYTHONPATH="$root/python/tests" "$py" -m pytest \
  -p sdk_plugin -q --no-header -p no:cacheprovider --timeout 60 -rfE "${sdk_tests[@]}")
refused=$(cd "$work" && "${clean_env[@]}" LD_LIBRARY_PATH="$below" "$py" -c 'import agent_sessions' 2>&1) \
  && { echo "SQLite 3.33.0 was not refused" >&2; exit 1; }
grep -q "needs SQLite 3.35.0 or newer; this interpreter's sqlite3 module uses SQLite 3.33.0" <<<"$refused" \
  || { echo "unexpected error on SQLite 3.33.0: $refused" >&2; exit 1; }
echo "SQLite 3.33.0: $(tail -1 <<<"$refused")"

step "benchmark smoke (${BENCH_SECONDS:=2} s; the full run is 20 s: python/bench.py)"
# -P: not the source tree beside the script (it has no compiled extension), the installed wheel.
"$py" -P python/bench.py --seconds "$BENCH_SECONDS" --dir "$work"
