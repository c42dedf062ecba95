"""The Helm chart, for real: lint, template, and install into the cluster; every object the chart
renders is accepted; `coffer controller` runs with exactly the chart's ServiceAccount and RBAC
and reconciles a KmsKey; `coffer csi` watches with exactly the chart's node plugin account; the
key-material protection refuses deletions; a misspelt value is refused; uninstall removes what
install made.

These tests start a controller of their own, so conftest runs them before the session's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

from cluster_helpers import (
    REPO_ROOT,
    Controller,
    coffer_binary,
    companion_name,
    delete_namespace,
    get_secret,
    is_ready,
    kmskey_manifest,
    kubectl,
    make_namespace,
    parameter_manifest,
    token_kubeconfig,
    wait_for_kmskey,
    wait_until,
)

CHART = REPO_ROOT / "charts" / "coffer"
HELM_TIMEOUT_SECONDS = 180


@pytest.fixture(scope="module")
def helm(crds) -> str:
    path = shutil.which("helm")
    if path is None:
        pytest.skip("helm is not on PATH (e2e/run-cluster.sh puts the control plane's own helm there)")
    return path


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([helm, *args], capture_output=True, text=True, timeout=HELM_TIMEOUT_SECONDS,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} exited with {result.returncode}:\n{result.stderr}{result.stdout}",
                    pytrace=False)
    return result


def rendered_objects(text: str) -> list[tuple[str, str, str, str | None]]:
    """(apiVersion, kind, name, namespace) of each object of a rendered manifest."""
    objects = []
    for document in yaml.safe_load_all(text):
        if document:
            metadata = document["metadata"]
            objects.append((document["apiVersion"], document["kind"], metadata["name"], metadata.get("namespace")))
    return objects


def resource_of(api_version: str, kind: str) -> str:
    """`kubectl get` argument for a kind: its plural, qualified by group."""
    group = api_version.split("/")[0] if "/" in api_version else ""
    resources = kubectl("api-resources", "--api-group", group, "-o", "wide", "--no-headers").stdout
    for line in resources.splitlines():
        fields = line.split()
        if kind in fields:
            plural = fields[0]
            return f"{plural}.{group}" if group else plural
    pytest.fail(f"the API server knows no kind {kind} in group {group!r}", pytrace=False)


def exists(api_version: str, kind: str, name: str, namespace: str | None) -> bool:
    args = ["get", resource_of(api_version, kind), name, "--ignore-not-found", "-o", "name"]
    if namespace:
        args += ["-n", namespace]
    return bool(kubectl(*args).stdout.strip())


def test_lint_is_clean(helm):
    out = run_helm(helm, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out.stdout, out.stdout


def test_a_misspelt_value_is_refused(helm):
    namespace = f"coffer-e2e-helm-{uuid.uuid4().hex[:8]}"
    out = run_helm(helm, "install", "coffer", str(CHART), "-n", namespace, "--create-namespace",
                   "--set", "replicaCont=3", check=False)
    assert out.returncode != 0, out.stdout
    assert "replicaCont" in out.stderr and "not allowed" in out.stderr, out.stderr
    assert "coffer" not in run_helm(helm, "list", "-n", namespace, "-q").stdout
    delete_namespace(namespace, wait=False)


def run_csi_node(namespace: str, account: str, socket_dir: str, tmp_path: Path) -> subprocess.Popen:
    """`coffer csi` with the token of the chart's node plugin ServiceAccount, on a socket and a
    state directory of its own (no volume is published: there is no kubelet)."""
    token = kubectl("create", "token", account, "-n", namespace, "--duration", "1h").stdout.strip()
    kubeconfig = token_kubeconfig(tmp_path / "csi-node.kubeconfig", token)
    environment = {**os.environ, "KUBECONFIG": str(kubeconfig), "COFFER_LOG": "warn,coffer::csi=debug"}
    log = open(tmp_path / "csi-node.log", "ab")
    try:
        process = subprocess.Popen(
            [coffer_binary(), "--log-format", "json", "csi", "--node-id", "e2e-node",
             "--endpoint", f"{socket_dir}/csi.sock",
             "--state-dir", str(tmp_path / "csi-state")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=environment)
    finally:
        log.close()
    return process


def csi_log_events(tmp_path: Path) -> list[dict]:
    events = []
    for line in (tmp_path / "csi-node.log").read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def test_install_run_as_the_chart_protect_and_uninstall(helm, tmp_path: Path):
    namespace = f"coffer-e2e-helm-{uuid.uuid4().hex[:8]}"
    apps = f"coffer-e2e-helm-app-{uuid.uuid4().hex[:8]}"
    release = "coffer"
    template = run_helm(helm, "template", release, str(CHART), "-n", namespace).stdout
    expected = rendered_objects(template)
    kinds = {kind for _, kind, _, _ in expected}
    assert {"Deployment", "Service", "ServiceAccount", "ClusterRole", "Role",
            "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
            "DaemonSet", "CSIDriver"} <= kinds, kinds

    run_helm(helm, "install", release, str(CHART), "-n", namespace, "--create-namespace")
    controller = None
    csi_node = None
    # pytest's tmp_path is too long for a socket path (sun_path holds 108 bytes).
    socket_dir = tempfile.mkdtemp(prefix="coffer-csi-")
    try:
        status = json.loads(run_helm(helm, "status", release, "-n", namespace, "-o", "json").stdout)
        assert status["info"]["status"] == "deployed", status["info"]
        installed = rendered_objects(run_helm(helm, "get", "manifest", release, "-n", namespace).stdout)
        assert sorted(installed, key=str) == sorted(expected, key=str)
        missing = [obj for obj in expected if not exists(obj[0], obj[1], obj[2], obj[3] or namespace)]
        assert not missing, f"rendered but not in the cluster: {missing}"

        # `coffer controller` with the chart's ServiceAccount token: its RBAC must be enough to
        # start, create the root key, hold the Lease and reconcile a KmsKey.
        account = json.loads(kubectl("get", "deployment", release, "-n", namespace, "-o", "json").stdout)[
            "spec"]["template"]["spec"]["serviceAccountName"]
        token = kubectl("create", "token", account, "-n", namespace, "--duration", "1h").stdout.strip()
        controller = Controller(coffer_binary(), namespace, tmp_path / "chart-controller.log",
                                kubeconfig=token_kubeconfig(tmp_path / "chart.kubeconfig", token))
        controller.start()
        make_namespace(apps, with_service_accounts=False)
        kubectl("apply", "-f", "-", input=json.dumps(kmskey_manifest("charted", apps)))
        obj = wait_for_kmskey(apps, "charted", "is Ready, reconciled by the chart's account", is_ready, timeout=60)
        key_id = obj["status"]["keyId"]
        material = companion_name(apps, key_id)
        assert get_secret(namespace, material) is not None
        assert "forbidden" not in controller.log_text().lower(), controller.log_tail()

        # Nobody but the controller may delete or change key material, or delete its namespace.
        for args in (["delete", "secret", material, "-n", namespace],
                     ["delete", "secret", "coffer-root-key", "-n", namespace],
                     ["label", "secret", material, "-n", namespace, "tampered=yes"],
                     ["delete", "namespace", namespace, "--wait=false"]):
            out = kubectl(*args, check=False)
            assert out.returncode != 0, f"kubectl {' '.join(args)} was allowed"
            assert "coffer" in out.stderr.lower() and "denied" in out.stderr.lower(), out.stderr
        assert get_secret(namespace, material) is not None
        assert get_secret(namespace, "coffer-root-key") is not None

        # `coffer csi` with the chart's node plugin account: its RBAC must be enough to watch
        # Parameters (and Secrets) in every namespace and hear of a change.
        plugin_account = json.loads(kubectl("get", "daemonset", f"{release}-csi-node", "-n", namespace,
                                            "-o", "json").stdout)["spec"]["template"]["spec"]["serviceAccountName"]
        csi_node = run_csi_node(namespace, plugin_account, socket_dir, tmp_path)
        wait_until("coffer csi lists Secrets and Parameters",
                   lambda: csi_log_events(tmp_path), lambda events: {"Secret", "Parameter"} <= {
                       e.get("fields", {}).get("kind") for e in events
                       if e.get("fields", {}).get("message") == "watch listed"}, timeout=60)
        kubectl("apply", "-f", "-", input=json.dumps(
            parameter_manifest("csi.watched", apps, name="/csi/watched", type="String", value="v")))
        wait_until("coffer csi hears of the new Parameter", lambda: csi_log_events(tmp_path),
                   lambda events: any(e.get("fields", {}).get("message") == "change noticed"
                                      and "/csi/watched" in e["fields"].get("notice", "")
                                      for e in events), timeout=60)
        log = (tmp_path / "csi-node.log").read_text()
        assert "forbidden" not in log.lower() and "watch failed" not in log, log[-4000:]
    finally:
        if csi_node is not None:
            csi_node.terminate()
            csi_node.wait(timeout=30)
        shutil.rmtree(socket_dir, ignore_errors=True)
        if controller is not None:
            controller.stop()
        kubectl("delete", "namespace", apps, "--ignore-not-found", "--wait=false", check=False)

    run_helm(helm, "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")
    left = [obj for obj in expected if exists(obj[0], obj[1], obj[2], obj[3] or namespace)]
    assert not left, f"still in the cluster after helm uninstall: {left}"
    # Without the chart's policies the namespace may go, material and all.
    delete_namespace(namespace)
    wait_until(f"namespace {namespace} is gone",
               lambda: kubectl("get", "namespace", namespace, "--ignore-not-found", "-o", "name").stdout,
               lambda out: not out.strip())
