# Coffer: the two quick-start commands are `make run` and `make test`.

CARGO ?= cargo

.PHONY: run build test lint crds fuzz

## Run the standalone server on its embedded default (data in ~/.local/share/coffer).
run:
	$(CARGO) run --release --bin coffer -- server

build:
	$(CARGO) build --release

## Format check, clippy with warnings as errors, then every test.
test: lint
	$(CARGO) test --all-targets
	$(CARGO) test --doc

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## Regenerate the committed CRD YAML (crds/ and charts/coffer/crds/) from the Rust types.
crds:
	COFFER_UPDATE_CRDS=1 $(CARGO) test --test crds

## Fuzz the ciphertext blob parser for FUZZ_SECONDS (needs cargo-fuzz; not run in CI).
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run blob_open -- -max_total_time=$(FUZZ_SECONDS)
