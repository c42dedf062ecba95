# Coffer: the two quick-start commands are `make run` and `make test`.

CARGO ?= cargo

.PHONY: run run-controller build image test lint deny crds fuzz bench bench-cluster e2e-cluster cluster-up cluster-down

## Run the standalone server on its embedded default (data in ~/.local/share/coffer).
run:
	$(CARGO) run --release --bin coffer -- server

## Run `coffer controller` against the current kubeconfig (plain HTTP on 127.0.0.1:8443, probes and
## metrics on 127.0.0.1:8080), after creating its namespace and applying the CRDs.
CONTROLLER_NAMESPACE ?= coffer-system
run-controller:
	$(CARGO) build --release --bin coffer
	kubectl create namespace $(CONTROLLER_NAMESPACE) --dry-run=client -o yaml | kubectl apply -f -
	kubectl apply --server-side -f crds/
	target/release/coffer controller --insecure-http --listen 127.0.0.1:8443 \
		--probe-listen 127.0.0.1:8080 --namespace $(CONTROLLER_NAMESPACE)

build:
	$(CARGO) build --release

## The container image (Dockerfile): IMAGE:IMAGE_TAG, the tag being Cargo.toml's version, which is
## also the chart's appVersion and so its default image. Built with CONTAINER_ENGINE, by default the
## first of docker, podman and buildah on PATH.
IMAGE ?= ghcr.io/coffer-dev/coffer
IMAGE_TAG ?= $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
CONTAINER_ENGINE ?= $(shell for e in docker podman buildah; do command -v $$e >/dev/null 2>&1 && { echo $$e; break; }; done)
image:
	@if [ -z "$(CONTAINER_ENGINE)" ]; then \
		echo "make image: no container engine found: install docker, podman or buildah, or set CONTAINER_ENGINE" >&2; \
		exit 1; \
	fi
	@$(CONTAINER_ENGINE) info >/dev/null 2>&1 || { \
		echo "make image: $(CONTAINER_ENGINE) is installed but does not answer \`$(CONTAINER_ENGINE) info\` (is its daemon running?)" >&2; \
		exit 1; }
	$(CONTAINER_ENGINE) build --file Dockerfile --tag $(IMAGE):$(IMAGE_TAG) .

## Format check, clippy with warnings as errors, every Rust test, then the end-to-end suites:
## the AWS CLI and boto3 against a real `coffer server`, csi-sanity against `coffer csi` (csi-sanity
## built with `go` on first use, cached in ~/.cache/coffer), and the cluster suite against the cluster
## KUBECONFIG names or else the repo's own control plane (built with `go` on first use, cached in
## ~/.cache/coffer; without either the cluster suite skips, with a banner). Python packages go
## into a cached virtualenv (e2e/python.sh), first on PATH for the Rust tests that drive botocore
## and boto3 too: nothing to install by hand.
test: lint
	PATH="$$(e2e/python.sh --venv)/bin:$$PATH" $(CARGO) test --lib --bins --tests
	$(CARGO) test --doc
	$(CARGO) build --bins
	COFFER_BIN=$(CURDIR)/target/debug/coffer e2e/run-kms.sh
	COFFER_BIN=$(CURDIR)/target/debug/coffer e2e/csi-sanity.sh
	COFFER_BIN=$(CURDIR)/target/debug/coffer e2e/run-cluster.sh

## The cluster end-to-end suite alone (same choice of cluster as `make test`).
e2e-cluster:
	$(CARGO) build --bins
	COFFER_BIN=$(CURDIR)/target/debug/coffer e2e/run-cluster.sh

## The repo's own control plane (etcd, kube-apiserver, kube-controller-manager on loopback) for
## use by hand: `make cluster-up`, then `export KUBECONFIG=$(CURDIR)/build/cluster/kubeconfig`
## (and PATH=$$COFFER_K8S_ASSETS:$$PATH for its kubectl and helm, both printed); `make cluster-down`.
cluster-up:
	python3 e2e/controlplane/controlplane.py up $(CURDIR)/build/cluster

cluster-down:
	python3 e2e/controlplane/controlplane.py down $(CURDIR)/build/cluster

lint: deny
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## The dependency policy (deny.toml): licenses, bans and sources always; advisories when the
## RustSec database (a git repository) can be fetched, and a loud notice when it cannot.
## cargo-deny is built once into the cache (~/.cache/coffer/tools), keyed by its version.
CARGO_DENY_VERSION := 0.20.2
COFFER_CACHE := $(or $(COFFER_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/coffer)
CARGO_DENY := $(COFFER_CACHE)/tools/cargo-deny-$(CARGO_DENY_VERSION)/bin/cargo-deny
deny:
	@test -x $(CARGO_DENY) || $(CARGO) install cargo-deny --locked --quiet \
		--version $(CARGO_DENY_VERSION) --root $(COFFER_CACHE)/tools/cargo-deny-$(CARGO_DENY_VERSION)
	$(CARGO_DENY) check --hide-inclusion-graph bans licenses sources
	@if $(CARGO_DENY) fetch db >/dev/null 2>&1; then \
		$(CARGO_DENY) check --hide-inclusion-graph advisories; \
	else \
		echo "=== cargo deny: advisories NOT CHECKED: the RustSec database cannot be fetched from here ==="; \
	fi

## Regenerate the committed CRD YAML (crds/ and charts/coffer/crds/) from the Rust types.
crds:
	COFFER_UPDATE_CRDS=1 $(CARGO) test --test crds

## Run every fuzz target in fuzz/ for FUZZ_SECONDS each, from its seeds (fuzz/seeds/) and with its
## dictionary (fuzz/dicts/) when it has them (needs cargo-fuzz; not run in CI). The corpus grows in
## fuzz/corpus/TARGET; crashes land in fuzz/artifacts/TARGET.
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	set -e; for target in $$(RUSTC_BOOTSTRAP=1 $(CARGO) fuzz list); do \
		seeds=; dict=; \
		if [ -d fuzz/seeds/$$target ]; then seeds=fuzz/seeds/$$target; fi; \
		if [ -f fuzz/dicts/$$target.dict ]; then dict=-dict=fuzz/dicts/$$target.dict; fi; \
		mkdir -p fuzz/corpus/$$target; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$target fuzz/corpus/$$target $$seeds -- \
			$$dict -max_total_time=$(FUZZ_SECONDS); \
	done

## Benchmark the KMS API over HTTP and the envelope cipher, then Secrets Manager's GetSecretValue
## and PutSecretValue, then Parameter Store's GetParameter (String, SecureString) and
## GetParametersByPath (1,000 parameters, 10 a page), each beside moto's in the same run
## (BENCH_CONNECTIONS, BENCH_SECONDS). moto comes from the cached virtualenv (e2e/python.sh).
bench:
	$(CARGO) build --release --bin coffer
	$(CARGO) bench --bench kms
	$(CARGO) bench --bench secretsmanager
	$(CARGO) bench --bench ssm
	$(CARGO) bench --bench kms_plugin
	COFFER_BIN=$(CURDIR)/target/release/coffer e2e/python.sh benches/csi.py

## The controller on a real API server (KUBECONFIG's, else the repo's own control plane): N KmsKeys
## applied at once (BENCH_CLUSTER_SIZES, default 1000,5000): seconds until all Ready, peak RSS,
## API requests per reconcile, writes once settled (BENCH_CLUSTER_QUIET_SECONDS, default 60); then
## 1,000 Secrets through kube-apiserver with `coffer kms-plugin` off and on.
bench-cluster:
	$(CARGO) build --release --bin coffer
	COFFER_BIN=$(CURDIR)/target/release/coffer e2e/python.sh benches/cluster.py
	COFFER_BIN=$(CURDIR)/target/release/coffer e2e/python.sh benches/kms_plugin.py
