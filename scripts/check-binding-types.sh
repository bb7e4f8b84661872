#!/usr/bin/env bash
# Fails if binding.d.cts differs from the committed one. `npm run build:native` regenerates it
# from the Rust exports of crates/node; it is committed so that `tsc --noEmit` can check the
# TypeScript before any build. Run it after a build: a difference means a Rust export changed and
# the regenerated declarations were not committed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! git diff --quiet -- binding.d.cts; then
  echo 'binding.d.cts differs from what `npm run build:native` generated: commit the regenerated file.' >&2
  git --no-pager diff --stat -- binding.d.cts >&2
  exit 1
fi
