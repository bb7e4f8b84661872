#!/usr/bin/env bash
# Type-checks the workspace (the Rust core and the napi bindings) for macOS on Apple silicon
# (aarch64-apple-darwin) and for Windows (x86_64-pc-windows-msvc), which cannot run here, with
# Debian's compiler instead of rustup's: the packages rustc-web and cargo-web (a recent rustc
# and cargo as /usr/bin/rustc and /usr/bin/cargo) and rust-web-src (the standard library's
# source), building the standard library for each target from that source (`-Zbuild-std`,
# allowed on a stable compiler by RUSTC_BOOTSTRAP=1). Nothing is downloaded but Debian's
# packages and the crates of Cargo.lock (and of the standard library's own Cargo.lock).
#
# Installs the three packages with apt-get when they are missing (as root). The build
# directory is kept outside the clone (SHMPIPE_BUILD_STD_DIR, by default under ~/.cache), so
# that a second run on the same machine only checks what changed. Fails on an error, and on a
# warning in this project's own code.
#
# Usage: scripts/check-foreign-targets.sh [TARGET...]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(aarch64-apple-darwin x86_64-pc-windows-msvc)
fi
packages=(rustc-web cargo-web rust-web-src)

installed() {
  dpkg-query -W -f='${Status}\n' "$@" 2>/dev/null | grep -c '^install ok installed$' || true
}

if [ "$(installed "${packages[@]}")" != "${#packages[@]}" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "check-foreign-targets: needs Debian's ${packages[*]} (apt-get as root)" >&2
    exit 1
  fi
  echo "check-foreign-targets: installing ${packages[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

# Debian's binaries by path: rustup's come first on PATH.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${SHMPIPE_BUILD_STD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shmpipe/build-std}"
echo "check-foreign-targets: $(/usr/bin/cargo --version), $($RUSTC --version), std source in $($RUSTC --print sysroot)/lib/rustlib/src/rust"

args=()
for target in "${targets[@]}"; do args+=(--target "$target"); done

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
/usr/bin/cargo check --locked -Zbuild-std --workspace "${args[@]}" --message-format=short \
  >"$log" 2>&1 || status=$?
# Warnings in the standard library or in dependencies are not this project's to fix.
own_warnings="$(grep -E '^(crates|benches)/[^:]+:[0-9]+:[0-9]+: warning' "$log" || true)"
if [ "$status" != 0 ] || [ -n "$own_warnings" ]; then
  cat "$log" >&2
  echo "check-foreign-targets: FAILED for ${targets[*]}" >&2
  exit 1
fi
grep -E '^ *Finished' "$log" || true
echo "check-foreign-targets: ok: ${targets[*]} type-check with Debian's rustc-web and -Zbuild-std"
