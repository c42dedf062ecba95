"""Fixtures for the cluster end-to-end suite.

One `coffer controller` runs on this machine for the whole session, against the cluster of the
current kubeconfig, with the API on plain HTTP on loopback. It gets a fresh system namespace
(`coffer-e2e-sys-<random>`, for its root key Secret and its Lease); the tests work in a fresh
application namespace (`coffer-e2e-<random>`). Both namespaces are deleted at the end, before the
controller stops.

Without a reachable cluster every test is reported as skipped, with the reason, and a banner
goes to standard error: the suite never passes without having run.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from cluster_helpers import (
    APP_KEY,
    CRD_DIR,
    SKIP_ENV,
    Controller,
    NAMESPACE_DELETE_TIMEOUT_SECONDS,
    KmsApi,
    SCAN_SKIPS,
    Plaintexts,
    banner,
    cluster_skip_reason,
    coffer_binary,
    create_token,
    app_key_manifest,
    is_ready,
    kubectl,
    make_namespace,
    make_parameters_namespace,
    make_secrets_namespace,
    secrets_client,
    service_client,
    wait_for_kmskey,
)

HERE = Path(__file__).resolve().parent

# Set once per session by pytest_configure; None when a cluster is reachable.
SKIP_REASON: str | None = None
# The running controller, for the log tail attached to failing tests.
CONTROLLER: Controller | None = None


# --------------------------------------------------------------------------------------------
# Skipping loudly without a cluster
# --------------------------------------------------------------------------------------------


def pytest_configure(config) -> None:
    global SKIP_REASON
    config.addinivalue_line(
        "markers",
        "run_last: runs after every other test of the session (the scans for plaintext, which "
        "look at what all the tests before them left behind)",
    )
    SKIP_REASON = cluster_skip_reason()
    if SKIP_REASON and SKIP_ENV not in os.environ:
        # run-cluster.sh has printed the banner already. Otherwise print it here, straight to the
        # real stderr, so that pytest's output capture cannot swallow it.
        sys.__stderr__.write(banner(SKIP_REASON) + "\n")
        sys.__stderr__.flush()


def _in_this_suite(item) -> bool:
    return HERE in Path(item.path).resolve().parents


# Modules whose tests run a controller of their own, and so must run before the session's
# controller starts: two controllers would both reconcile every KmsKey.
RUN_FIRST = ("test_helm.py",)


# Seconds the session's controller gathers changes before rolling a workload.
RESTART_DEBOUNCE_SECONDS = 3


def pytest_collection_modifyitems(config, items) -> None:
    items.sort(key=lambda item: (Path(item.path).name not in RUN_FIRST,
                                 item.get_closest_marker("run_last") is not None))
    if not SKIP_REASON:
        return
    marker = pytest.mark.skip(reason=f"e2e/cluster: no Kubernetes cluster reachable ({SKIP_REASON})")
    for item in items:
        if _in_this_suite(item):
            item.add_marker(marker)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if SKIP_REASON:
        terminalreporter.write_sep("=", banner(SKIP_REASON), red=True, bold=True)
    for reason in SCAN_SKIPS:  # cluster_helpers.skip_scan
        terminalreporter.write_sep("=", f"e2e/cluster: plaintext scan SKIPPED: {reason}", red=True, bold=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and CONTROLLER is not None and _in_this_suite(item):
        report.sections.append(
            (f"coffer controller log, last lines ({CONTROLLER.log_path})", CONTROLLER.log_tail())
        )


# --------------------------------------------------------------------------------------------
# Session objects
# --------------------------------------------------------------------------------------------

@dataclass
class Cluster:
    """The namespaces, the running controller and the API client handed to the tests."""

    namespace: str
    system_namespace: str
    controller: Controller
    api: KmsApi
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self, service_account: str) -> str:
        """A token with audience `coffer` for a service account of the application namespace."""
        if service_account not in self._tokens:
            self._tokens[service_account] = create_token(self.namespace, service_account)
        return self._tokens[service_account]

    @property
    def admin(self) -> str:
        return self.token("e2e-admin")


def delete_namespaces(names: list[str]) -> list[str]:
    """Deletes the namespaces and waits until they are gone; returns what went wrong. Nothing of
    Coffer's holds a namespace up, so one that stays is a problem to report."""
    problems: list[str] = []
    for name in names:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
    deadline = time.monotonic() + NAMESPACE_DELETE_TIMEOUT_SECONDS
    remaining = list(names)
    while remaining and time.monotonic() < deadline:
        remaining = [n for n in remaining if kubectl("get", "namespace", n, check=False).returncode == 0]
        if remaining:
            time.sleep(1)
    for name in remaining:
        problems.append(f"namespace {name} still exists after {NAMESPACE_DELETE_TIMEOUT_SECONDS}s")
    return problems


@pytest.fixture(scope="session")
def crds() -> None:
    """A reachable cluster with the Coffer CRDs applied and established."""
    if SKIP_REASON:
        pytest.skip(banner(SKIP_REASON))
    kubectl("apply", "--server-side", "-f", str(CRD_DIR))
    for crd in ("kmskeys.coffer.dev", "secrets.coffer.dev", "parameters.coffer.dev"):
        kubectl("wait", "--for", "condition=Established", f"crd/{crd}", "--timeout=60s", timeout=90)


@pytest.fixture(scope="session")
def cluster(crds, tmp_path_factory) -> Iterator[Cluster]:
    global CONTROLLER
    binary = coffer_binary()

    suffix = uuid.uuid4().hex[:8]
    namespace = f"coffer-e2e-{suffix}"
    system_namespace = f"coffer-e2e-sys-{suffix}"
    base = tmp_path_factory.mktemp("cluster")
    # The session's controller runs as the cluster's admin, so it may offer rotation Jobs. Its
    # restart debounce is short, for test_restart_on_change.
    controller = Controller(binary, system_namespace, base / "controller.log",
                            extra_args=("--rotation-jobs", "--restart-debounce-seconds", str(RESTART_DEBOUNCE_SECONDS)))
    try:
        make_namespace(system_namespace, with_service_accounts=False)
        make_namespace(namespace)
        try:
            controller.start()
        except RuntimeError as error:
            pytest.fail(str(error), pytrace=False)
        CONTROLLER = controller
        yield Cluster(namespace, system_namespace, controller, KmsApi(controller.endpoint))
    finally:
        problems = delete_namespaces([namespace, system_namespace])
        CONTROLLER = None
        controller.stop()
        print(f"\ncoffer controller log: {controller.log_path}")
        if problems:
            pytest.fail("cleanup: " + "; ".join(problems) + "\n--- controller log ---\n"
                        + controller.log_tail(), pytrace=False)


@pytest.fixture(scope="session")
def app_key(cluster) -> str:
    """The KmsKey `app` (alias e2e/app), Ready; returns its key id (a uuid).

    Tests that disable or delete it put it back as they found it."""
    kubectl("apply", "-f", "-", input=json.dumps(app_key_manifest(cluster.namespace)))
    obj = wait_for_kmskey(cluster.namespace, APP_KEY, "is Ready with a key id", is_ready, timeout=60)
    return obj["status"]["keyId"]


@pytest.fixture
def app_key_ready(cluster, app_key) -> dict:
    """The KmsKey `app` as it is now: Ready, Enabled, same key id. A test before may have
    disabled or deleted it and put it back, so this waits a reconcile for that to settle."""
    obj = wait_for_kmskey(
        cluster.namespace, APP_KEY, f"is Ready and Enabled with keyId {app_key}",
        lambda o: is_ready(o) and o["status"].get("keyState") == "Enabled",
    )
    assert obj["status"]["keyId"] == app_key, f"KmsKey app changed key id: {obj['status']}"
    return obj


# --------------------------------------------------------------------------------------------
# Secrets (secrets.coffer.dev)
# --------------------------------------------------------------------------------------------

@dataclass
class SecretsNamespace:
    """A namespace of the session for the Secrets tests, with ServiceAccounts of known rights."""

    name: str
    endpoint: str
    system_namespace: str

    def client(self, service_account: str = "sm-admin"):
        """boto3 `secretsmanager`, signing with the ServiceAccount's temporary credentials."""
        return secrets_client(self.endpoint, self.name, service_account)


@pytest.fixture(scope="session")
def plaintexts() -> Plaintexts:
    """Every value the Secrets tests and the SecureString values the Parameters tests used, for
    the scans at the end of the session."""
    return Plaintexts()


@pytest.fixture(scope="session")
def secrets_ns(cluster) -> Iterator[SecretsNamespace]:
    """`coffer-e2e-sm-<random>`: sm-admin may do anything with secrets.coffer.dev (and kmskeys),
    sm-reader only `get`, sm-nobody nothing. It lives until the end of the session, so that the
    scans at the end see its Secret resources; then it is deleted."""
    name = f"coffer-e2e-sm-{uuid.uuid4().hex[:8]}"
    make_secrets_namespace(name)
    try:
        yield SecretsNamespace(name, cluster.controller.endpoint, cluster.system_namespace)
    finally:
        problems = delete_namespaces([name])
        if problems:
            pytest.fail("cleanup: " + "; ".join(problems), pytrace=False)


# --------------------------------------------------------------------------------------------
# Parameters (parameters.coffer.dev)
# --------------------------------------------------------------------------------------------

@dataclass
class ParametersNamespace:
    """A namespace of the session for the Parameters tests, with ServiceAccounts of known rights."""

    name: str
    endpoint: str
    system_namespace: str

    def client(self, service_account: str = "ps-admin"):
        """boto3 `ssm`, signing with the ServiceAccount's temporary credentials."""
        return service_client("ssm", self.endpoint, self.name, service_account)


@pytest.fixture(scope="session")
def params_ns(cluster) -> Iterator[ParametersNamespace]:
    """`coffer-e2e-ps-<random>`: ps-admin may do anything with parameters.coffer.dev (and
    kmskeys), ps-reader only `get`, ps-nobody nothing. It lives until the end of the session, so
    that the scans at the end see its Parameter resources; then it is deleted."""
    name = f"coffer-e2e-ps-{uuid.uuid4().hex[:8]}"
    make_parameters_namespace(name)
    try:
        yield ParametersNamespace(name, cluster.controller.endpoint, cluster.system_namespace)
    finally:
        problems = delete_namespaces([name])
        if problems:
            pytest.fail("cleanup: " + "; ".join(problems), pytrace=False)
