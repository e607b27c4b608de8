#!/usr/bin/env bash
# Instructions per acknowledged `add_items`, counted by valgrind's callgrind (instructions, not
# seconds: repeatable on a loaded machine), for the raw rusqlite group-commit loop and for the
# store (30 writer tasks on one session, no readers), and their ratio.
#
# Each workload runs twice, with N and 3N adds; the difference divided by 2N is the marginal
# cost of one acknowledged add, free of start-up, schema creation and shutdown.
#
# Usage: scripts/callgrind.sh [N (default 3000)] [workloads (default: raw store advanced)]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3000}; shift || true
workloads=${*:-raw store advanced}
bin=$(cargo bench --bench ceiling --no-run --message-format=json 2>/dev/null \
      | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "ceiling" and m.get("executable"):
        print(m["executable"])' | tail -n 1)
[ -x "$bin" ] || { echo "could not build the ceiling bench" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# Total instructions of one run of `ceiling count WHAT N` (every thread).
instructions() {
    valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$tmp/cg.$1.$2" \
        "$bin" count "$1" "$2" >"$tmp/out.$1.$2" 2>"$tmp/err.$1.$2"
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/err.$1.$2" | tail -n 1
}

declare -A per_add
for w in $workloads; do
    small=$(instructions "$w" "$n")
    large=$(instructions "$w" "$((3 * n))")
    per_add[$w]=$(( (large - small) / (2 * n) ))
    printf '%-9s %14d instructions for %d adds, %14d for %d: %8d per add   (%s)\n' \
        "$w" "$small" "$n" "$large" "$((3 * n))" "${per_add[$w]}" "$(cat "$tmp/out.$w.$((3 * n))")"
    if [ -n "${CALLGRIND_TOP:-}" ]; then
        callgrind_annotate "$tmp/cg.$w.$((3 * n))" 2>/dev/null | sed -n '1,/^$/d; 1,40p' | head -n "${CALLGRIND_TOP}"
    fi
done
if [ -n "${per_add[raw]:-}" ]; then
    for w in $workloads; do
        [ "$w" = raw ] && continue
        target=""; [ "$w" = store ] && target="   (target <= 1.5x)"
        python3 -c "import sys; print(f'{sys.argv[1]} / raw: {int(sys.argv[2]) / int(sys.argv[3]):.2f}x{sys.argv[4]}')" \
            "$w" "${per_add[$w]}" "${per_add[raw]}" "$target"
    done
fi
