#!/usr/bin/env bash
# Runs BenchmarkIdleFleet against this tree's monitor and against the
# monitor of BASE (a worktree, e.g. `git worktree add /tmp/mon-base 95cadbf`),
# one after the other on this machine, and prints the ratio of their CPU.
# The FLOTILLA_IDLE_* variables pass through (see idle_bench_test.go).
set -euo pipefail
base=${1:?usage: idlebench.sh BASE_WORKTREE}
here=$(cd "$(dirname "$0")/../../../.." && pwd)
pkg=./services/monitor/monitor/
cp "$here/services/monitor/monitor/idle_bench_test.go" "$base/services/monitor/monitor/"
run() { (cd "$1" && go test -run XXX -bench IdleFleet -benchtime=1x -count=1 "$pkg" | grep -E '^ +idle_bench_test.go') }
new=$(run "$here")
old=$(run "$base")
echo "new: ${new#*: }"
echo "old: ${old#*: }"
cores() { sed -E 's/.*: ([0-9.]+) cores with.*/\1/' <<<"$1"; }
awk -v n="$(cores "$new")" -v o="$(cores "$old")" 'BEGIN { printf "new/old CPU: %.3f (old/new: %.1fx)\n", n/o, o/n }'
