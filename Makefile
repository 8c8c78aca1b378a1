# delegate — one command for the demo, one for the tests.
# Both add the wasm32-wasip2 target first (RUSTUP_AUTO_INSTALL may be off).

CARGO ?= cargo
GUESTS := -p delegate-sdk -p echo -p hostile -p probe-sandbox

.PHONY: setup demo test lint fmt ci bench

setup:
	rustup target add wasm32-wasip2

## The main job: run the whole chain locally (see README).
demo: setup
	$(CARGO) run --release --locked -p delegate -- demo

## Every test: unit, end-to-end (real servers on loopback), CLI.
test: setup
	$(CARGO) test --locked

## Formatting and lints, host (native) and guests (wasm32-wasip2).
lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --target wasm32-wasip2 $(GUESTS) -- -D warnings

fmt:
	$(CARGO) fmt --all

## What CI runs.
ci: lint test

## Benchmarks (release build; figures go to BENCHMARKS.md).
bench: setup
	$(CARGO) bench --locked -p delegate-e2e
