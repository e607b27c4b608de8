#!/usr/bin/env bash
# What a downstream crate sees: the library by path with default features, used from a
# current-thread tokio program (downstream-check/), with neither clap nor tokio among the
# library's own dependencies, and its internals (pool, sync shim) unreachable.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/downstream}"

deps=$(cargo tree -p agent-sessions -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)
if grep -qxE 'clap|tokio' <<<"$deps"; then
  echo "error: the library depends on clap or tokio:" >&2
  grep -xE 'clap|tokio' <<<"$deps" >&2
  exit 1
fi
echo "library dependencies: $(wc -l <<<"$deps") crates, no clap, no tokio"

cargo run --quiet --manifest-path downstream-check/Cargo.toml

# The internals must not resolve: build the probe as an extra binary of the same crate.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
cp -r downstream-check/Cargo.toml downstream-check/src "$probe/"
sed -i "s|path = \"..\"|path = \"$PWD\"|" "$probe/Cargo.toml"
cp downstream-check/compile-fail/internals.rs "$probe/src/main.rs"
if out=$(cargo build --quiet --manifest-path "$probe/Cargo.toml" 2>&1); then
  echo "error: agent_sessions::pool / ::sync resolved in a default build" >&2
  exit 1
fi
for name in pool sync; do
  if ! grep -q "no \`$name\` in the root" <<<"$out"; then
    echo "error: the internals probe failed for another reason than a missing \`$name\`:" >&2
    echo "$out" >&2
    exit 1
  fi
done
echo "agent_sessions::pool and agent_sessions::sync do not resolve in a default build"
