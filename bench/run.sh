#!/bin/sh
# make bench: side-by-side benchmarks of our amphora agent against the
# reference Python agent (Debian's octavia-agent), on this machine.
#
#   bench/run.sh bin/amphora-agent [sidebyside options...]
#
# 1. go test -bench Build ./agent/heartbeat/   in-process Go figures (testing.B)
# 2. bench/sidebyside                          both agents side by side, each in
#                                              its own sandbox; prints the table
#                                              and writes bench/results.md
# Needs root (mount and network namespaces). Options after the binary go to
# sidebyside (-quick for a smoke run, -keep to keep logs, -h for the list).
# BENCH_GOTEST_COUNT (default 3) repeats the go test benchmarks.
set -eu

if [ $# -lt 1 ]; then
  echo "usage: $0 AGENT_BINARY [sidebyside options...]" >&2
  exit 2
fi
agent=$1
shift

cd "$(dirname "$0")/.."
GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
# testutil finds the module (and Octavia's templater) through `go env`.
PATH="$(dirname "$GO"):$PATH"
export PATH

if [ "$(id -u)" != 0 ]; then
  echo "bench: needs root (the agents run in private mount and network namespaces)" >&2
  exit 1
fi
for f in "$agent" /usr/bin/amphora-agent /usr/sbin/haproxy /usr/bin/python3 /usr/bin/nsenter; do
  if [ ! -x "$f" ]; then
    echo "bench: $f is missing (make bench installs the packages with scripts/deps.sh bench)" >&2
    exit 1
  fi
done

start=$(date +%s)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/abench-run-XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

echo "bench: building the harness"
"$GO" build -o "$tmp/sidebyside" ./bench/sidebyside

echo "bench: in-process Go benchmarks (go test -bench Build ./agent/heartbeat/)"
if ! "$GO" test -run '^$' -bench 'Build' -benchmem -count "${BENCH_GOTEST_COUNT:-3}" ./agent/heartbeat/ >"$tmp/gobench.txt" 2>&1; then
  cat "$tmp/gobench.txt"
  echo "bench: go test -bench failed" >&2
  exit 1
fi
cat "$tmp/gobench.txt"

echo "bench: side by side with the reference agent"
"$tmp/sidebyside" -agent "$agent" -gobench "$tmp/gobench.txt" -out bench/results.md "$@"

echo "bench: done in $(( $(date +%s) - start )) s; results in bench/results.md"
