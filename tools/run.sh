#!/usr/bin/env bash
# `make run`: installs the build tools if needed, builds the release site and serves it on
# http://127.0.0.1:3000 (LEPTOS_SITE_ADDR to change). History and everything else are embedded: no other
# service is needed. `--precompress` writes a brotli and a gzip copy of each of the site's files at
# build time, which the server sends as they are (src/server/compression.rs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. tools/setup.sh
exec cargo leptos serve --release --precompress
