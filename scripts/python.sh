#!/usr/bin/env bash
# The Python package (python/): lints of its crate, a wheel built with pip (checked to carry no
# SQLite of its own), its tests, the OpenAI Agents SDK's own session tests run against it, and a
# short benchmark smoke. Usage: scripts/python.sh
# Env: CARGO_TARGET_DIR (default target/python), AGENT_SESSIONS_PY_VENV (default
# target/python-venv), BENCH_SECONDS (smoke length, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/python}"
venv="${AGENT_SESSIONS_PY_VENV:-$root/target/python-venv}"
work="$CARGO_TARGET_DIR/python-work"
mkdir -p "$work"

step() { printf '\n==> %s\n' "$*"; }

step "python/: cargo fmt --check, cargo clippy -D warnings"
(cd python && cargo fmt --check && cargo clippy --all-targets --quiet -- -D warnings)

step "venv $venv with the SDK and its test dependencies (pinned as in the SDK's lock file)"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check \
  'openai-agents==0.24.0' 'openai==3.29.0' 'pytest==9.0.3' 'pytest-asyncio==1.4.0' \
  'pytest-mock' 'pytest-timeout' 'sqlalchemy'

# One SQLite per process: the extension links the libsqlite3 the interpreter's sqlite3 module
# loads (found in the interpreter's memory map, and linked by path, so no -dev package is
# needed). The library's driver (rusqlite 0.43) needs SQLite 3.45.3 or newer; where the
# interpreter's is older (Debian 12: 3.40.1), build one shared libsqlite3.so.0 from the SQLite
# sources the driver ships and put it first on LD_LIBRARY_PATH for the interpreter and the
# extension alike.
if "$py" -c 'import sqlite3, sys; sys.exit(sqlite3.sqlite_version_info < (3, 45, 3))'; then
  interp_lib=$("$py" -c '
import sqlite3
libs = {l.split()[-1] for l in open("/proc/self/maps") if "/libsqlite3" in l}
print(libs.pop() if len(libs) == 1 else "")')
  if [ -z "$interp_lib" ]; then
    echo "the interpreter's sqlite3 module does not load a shared libsqlite3: the extension" \
      "cannot share its SQLite (one SQLite per process); use an interpreter built against one" >&2
    exit 1
  fi
  link="$CARGO_TARGET_DIR/sqlite-link"
  mkdir -p "$link"
  ln -sf "$interp_lib" "$link/libsqlite3.so"
  export SQLITE3_LIB_DIR="$link"
else
  lib="$CARGO_TARGET_DIR/sqlite"
  if [ ! -f "$lib/libsqlite3.so.0" ]; then
    step "system SQLite $("$py" -c 'import sqlite3; print(sqlite3.sqlite_version)') is too old: building libsqlite3.so.0 in $lib"
    src=$(cd python && cargo metadata --format-version 1 --quiet | "$py" -c '
import json, os, sys
pkgs = json.load(sys.stdin)["packages"]
print(next(os.path.dirname(p["manifest_path"]) for p in pkgs if p["name"] == "libsqlite3-sys"))')
    mkdir -p "$lib"
    cc -O2 -fPIC -shared -Wl,-soname,libsqlite3.so.0 -o "$lib/libsqlite3.so.0" \
      -DSQLITE_THREADSAFE=1 -DSQLITE_ENABLE_API_ARMOR -DSQLITE_ENABLE_COLUMN_METADATA \
      -DSQLITE_ENABLE_DBSTAT_VTAB -DSQLITE_ENABLE_FTS3 -DSQLITE_ENABLE_FTS3_PARENTHESIS \
      -DSQLITE_ENABLE_FTS5 -DSQLITE_ENABLE_JSON1 -DSQLITE_ENABLE_RTREE -DSQLITE_ENABLE_STAT4 \
      -DSQLITE_ENABLE_UNLOCK_NOTIFY -DSQLITE_USE_URI -DSQLITE_SOUNDEX \
      "$src/sqlite3/sqlite3.c" -lpthread -lm -ldl
    ln -sf libsqlite3.so.0 "$lib/libsqlite3.so"
  fi
  export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export SQLITE3_LIB_DIR="$lib"
fi
echo "SQLite in this process: $("$py" -c 'import sqlite3; print(sqlite3.sqlite_version)')"

step "pip wheel ./python (maturin from PyPI), checked to link the process's libsqlite3, not carry one"
rm -rf "$work/wheels"
"$py" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$work/wheels" ./python
wheel=$(ls "$work"/wheels/agent_sessions-*.whl)
"$py" - "$wheel" <<'PY'
import subprocess, sys, tempfile, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
libs = [n for n in wheel.namelist() if ".so" in n.rsplit("/", 1)[-1]]
assert len(libs) == 1 and libs[0].startswith("agent_sessions/_native"), f"unexpected libraries: {libs}"
with tempfile.TemporaryDirectory() as d:
    path = wheel.extract(libs[0], d)
    dynamic = subprocess.run(["readelf", "-d", path], check=True, capture_output=True, text=True).stdout
    assert "libsqlite3.so.0" in dynamic, "the extension does not link libsqlite3.so.0"
    defined = subprocess.run(["nm", "-D", "--defined-only", path], check=True, capture_output=True, text=True).stdout
    own = [l for l in defined.splitlines() if " sqlite3_" in l]
    assert not own, f"the extension defines SQLite symbols of its own: {own[:3]}"
print(f"{sys.argv[1].rsplit('/', 1)[-1]}: one extension, NEEDED libsqlite3.so.0, no SQLite inside")
PY
"$py" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$wheel"

step "python/tests (the package's own tests)"
(cd "$work" && "$py" -m pytest -q --no-header -p no:cacheprovider --timeout 60 "$root/python/tests")

step "the SDK's session tests (openai-agents 0.24.0 sdist) against agent_sessions"
sdk="$work/openai_agents-0.24.0"
if [ ! -d "$sdk/tests" ]; then
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$work" 'openai-agents==0.24.0'
  tar -xzf "$work/openai_agents-0.24.0.tar.gz" -C "$work"
fi
(cd "$sdk" && PYTHONPATH="$root/python/tests" "$py" -m pytest -p sdk_plugin -q --no-header \
  -p no:cacheprovider --timeout 60 -rfE \
  tests/memory/test_session.py tests/memory/test_session_limit.py \
  tests/extensions/memory/test_advanced_sqlite_session.py)

step "benchmark smoke (${BENCH_SECONDS:=2} s; the full run is 20 s: python/bench.py)"
# -P: not the source tree beside the script (it has no compiled extension), the installed wheel.
"$py" -P python/bench.py --seconds "$BENCH_SECONDS" --dir "$work"
