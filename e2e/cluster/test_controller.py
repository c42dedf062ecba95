"""The controller process itself: probes, metrics, its log, and what it keeps in its namespace."""

from __future__ import annotations

import json

import requests

from cluster_helpers import LEASE_NAME, ROOT_KEY_SECRET, get_secret, kubectl_json


def test_probes(cluster):
    for path in ("/healthz", "/readyz"):
        response = requests.get(cluster.controller.probe_endpoint + path, timeout=10)
        assert response.status_code == 200, f"{path}: HTTP {response.status_code} {response.text[:500]}"


def test_metrics(cluster, app_key):
    # One API call and one reconcile (the app key) have happened, so both counters have series.
    cluster.api.describe(app_key, cluster.admin)
    response = requests.get(cluster.controller.probe_endpoint + "/metrics", timeout=10)
    assert response.status_code == 200, response.text[:500]
    for metric in ("coffer_api_calls_total", "coffer_controller_reconciles_total"):
        assert metric in response.text, f"{metric} missing from /metrics:\n{response.text[:3000]}"


def test_root_key_secret_and_lease_in_system_namespace(cluster):
    secret = get_secret(cluster.system_namespace, ROOT_KEY_SECRET)
    assert secret is not None, f"no Secret {ROOT_KEY_SECRET} in {cluster.system_namespace}"
    assert secret.get("data"), f"Secret {ROOT_KEY_SECRET} holds no data"
    lease = kubectl_json("get", "leases.coordination.k8s.io", LEASE_NAME, "-n", cluster.system_namespace)
    assert lease is not None, f"no Lease {LEASE_NAME} in {cluster.system_namespace}"
    assert (lease.get("spec") or {}).get("holderIdentity"), f"Lease without a holder: {json.dumps(lease)}"


def test_log_is_json_lines(cluster, app_key):
    lines = [line for line in cluster.controller.log_text().splitlines() if line.strip()]
    assert lines, "the controller wrote no log at all"
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON log line (--log-format json): {line[:500]}") from None
        assert isinstance(entry, dict), line[:500]
