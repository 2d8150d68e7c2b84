# The two commands of the README. Each installs what it needs first (see tools/setup.sh).
.PHONY: run test bench

## Build the app and serve it on http://127.0.0.1:3000
run:
	bash tools/run.sh

## Run every test: lints, Rust unit and integration tests, Playwright in headless chromium
test:
	bash tools/test.sh

## The fan-out benchmark against the reference FastAPI chat (see tools/bench.sh; BENCH_QUICK=1 for a smoke run)
bench:
	bash tools/bench.sh
