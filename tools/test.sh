#!/usr/bin/env bash
# `make test`: the whole test suite, installing what it needs first (build tools, Debian's chromium, the
# Playwright packages). Lints, then Rust unit and integration tests, then the release build and the
# Playwright suite against it in a real (headless) browser.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. tools/setup.sh
step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ ! -x /usr/bin/chromium ]; then
  step "installing Debian's chromium for the browser tests"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium
fi

if ! command -v redis-server >/dev/null; then
  step "installing Debian's redis-server for the cluster tests (the tests start their own instances)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server
  # Only the binary is wanted: no system service may be relied on, or left running.
  $sudo systemctl disable --now redis-server 2>/dev/null || $sudo service redis-server stop 2>/dev/null || true
fi

if [ ! -d end2end/node_modules/@playwright/test ] ||
  [ end2end/package-lock.json -nt end2end/node_modules/.package-lock.json ]; then
  step "installing Playwright (no browser download: the tests drive /usr/bin/chromium)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix end2end --no-audit --no-fund --loglevel=error
fi

step "lints: rustfmt and clippy"
cargo fmt --all -- --check
cargo clippy --features ssr --all-targets -- -D warnings
cargo clippy --lib --target wasm32-unknown-unknown --no-default-features --features hydrate -- -D warnings

step "Rust tests (unit + integration over real sockets)"
cargo test --features ssr

step "release build of the site and server"
cargo leptos build --release

step "browser tests (Playwright, headless chromium)"
cd end2end
npx playwright test
