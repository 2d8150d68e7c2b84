# The two commands of the README. Each installs what it needs first (see tools/setup.sh).
.PHONY: run test

## Build the app and serve it on http://127.0.0.1:3000
run:
	bash tools/run.sh

## Run every test: lints, Rust unit and integration tests, Playwright in headless chromium
test:
	bash tools/test.sh
