#!/bin/sh
# Runs every native Go fuzz target of the module for a fixed time each:
#   scripts/fuzz.sh 10s     (make test: a short budget per target)
#   scripts/fuzz.sh 5m      (make fuzz)
# Targets are found by their "func FuzzXxx(" in *_test.go files, so new
# ones are picked up without editing this script. An input that fails is
# written under the package's testdata/fuzz/<target>/, where it becomes a
# seed that every "go test" replays: commit it with the fix.
set -eu
budget=${1:-10s}
GO=${GO:-go}
# fuzzing workers: one by default, the machines are small and shared
parallel=${FUZZ_PARALLEL:-1}
cd "$(dirname "$0")/.."
failed=0
for dir in $(grep -rl --include='*_test.go' '^func Fuzz[A-Z][A-Za-z0-9_]*(f \*testing.F)' . | xargs -n1 dirname | sort -u); do
	for target in $(grep -h -o '^func Fuzz[A-Z][A-Za-z0-9_]*(f \*testing.F)' "$dir"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/' | sort -u); do
		echo "fuzz $dir $target ($budget)"
		if ! "$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$budget" -parallel "$parallel" "$dir"; then
			failed=1
		fi
	done
done
exit $failed
