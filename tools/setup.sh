#!/usr/bin/env bash
# Installs what building the app needs, and nothing twice: the wasm32 target, cargo-leptos, the
# wasm-bindgen CLI at exactly the version in Cargo.lock, and wasm-opt. Source it (`. tools/setup.sh`) to
# get them on PATH; every step is skipped when its tool is already there at the right version. Safe to
# source from an interactive shell: the installs run in a subshell with strict error handling.
#
# Why each tool comes from where it does: cargo-leptos would otherwise download wasm-bindgen, wasm-opt
# and sass from GitHub at build time. We build cargo-leptos with `no_downloads`, so a missing tool fails
# at once with its name instead, and install each tool from a package registry ourselves.
_groupchat_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$_groupchat_root/tools/node_modules/.bin:$PATH"

_groupchat_setup() (
  set -euo pipefail
  root="$_groupchat_root"
  CARGO_LEPTOS_VERSION=0.3.10 # 0.3.11's lock file needs rustc 1.96
  step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    step "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi

  if [ "$(cargo leptos --version 2>/dev/null)" != "cargo-leptos $CARGO_LEPTOS_VERSION" ]; then
    step "building cargo-leptos $CARGO_LEPTOS_VERSION (once; about 20 minutes on 2 cores)"
    cargo install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked --features no_downloads
  fi

  # The CLI must match the wasm-bindgen crate the lock file resolved, or the generated JS won't fit.
  wasm_bindgen_version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$root/Cargo.lock")"
  if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $wasm_bindgen_version" ]; then
    step "building wasm-bindgen-cli $wasm_bindgen_version (once)"
    # Not --locked: its lock file pins a webpki-roots release the registry no longer serves.
    cargo install wasm-bindgen-cli --version "$wasm_bindgen_version" --force
  fi

  if [ ! -x "$root/tools/node_modules/.bin/wasm-opt" ] ||
    [ "$root/tools/package-lock.json" -nt "$root/tools/node_modules/.package-lock.json" ]; then
    step "installing wasm-opt (npm package binaryen)"
    npm ci --prefix "$root/tools" --no-audit --no-fund --loglevel=error
  fi
)
_groupchat_setup
