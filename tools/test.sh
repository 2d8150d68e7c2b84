#!/usr/bin/env bash
# `make test`: the whole test suite, installing what it needs first (build tools, Debian's chromium and
# postgresql, the Playwright packages). Lints, then Rust unit and integration tests, then the release
# build and the Playwright suite against it in a real (headless) browser.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. tools/setup.sh
step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

if [ ! -x /usr/bin/chromium ]; then
  step "installing Debian's chromium for the browser tests"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium
fi

# An emoji font, as people's systems have: without one the screenshots show boxes for the emoji the
# page's font stack asks for (the stack names the usual emoji fonts; it cannot supply one).
if [ ! -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]; then
  step "installing Debian's fonts-noto-color-emoji for the browser tests' screenshots"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq fonts-noto-color-emoji
fi

# The store tests start private PostgreSQL servers of their own (tests/common/postgres.rs) from
# PostgreSQL's binaries: Debian keeps them off PATH, in /usr/lib/postgresql/<version>/bin. No system
# service is used (the package may start one; the tests never connect to it).
have_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null; }
if ! have_initdb; then
  step "installing Debian's postgresql for the store tests"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql
  have_initdb || { echo "postgresql is installed, but there is still no initdb" >&2; exit 1; }
fi

if ! command -v redis-server >/dev/null; then
  step "installing Debian's redis-server for the cluster tests (the tests start their own instances)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server
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
# --precompress: the site's files compressed once at build time at brotli's best quality, as deployed
# (end2end/tests/weight.spec.ts holds the first load to its budget).
cargo leptos build --release --precompress

step "browser tests (Playwright, headless chromium)"
cd end2end
npx playwright test
