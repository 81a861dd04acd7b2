#!/bin/sh
# The Debian package version of the checked-out tree:
#   <last tag without "v", or 0.0>+git<commits since>.<commit>[~dirty]
# so that every later commit is a higher version (upgrades work) and a
# tree with uncommitted changes sorts before its commit.
set -eu
cd "$(dirname "$0")/.."
tag=$(git describe --tags --abbrev=0 2>/dev/null || true)
base=${tag#v}
count=$(git rev-list --count ${tag:+"$tag"..}HEAD 2>/dev/null || echo 0)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=""
if ! git diff --quiet HEAD 2>/dev/null; then
	dirty="~dirty"
fi
echo "${base:-0.0}+git$count.$commit$dirty"
