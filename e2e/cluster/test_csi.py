"""The CSI node plugin (`coffer csi`) against the session's controller, on real tmpfs mounts with
real ServiceAccount tokens.

The tests themselves are Rust (`tests/csi_cluster.rs`): they start `coffer csi`, drive it over its
socket as kubelet would, and mint the pods' tokens with the API server's TokenRequest. This
module gives them a namespace whose ServiceAccounts have known rights and the controller's
endpoint, runs them, and then looks for every value they used in the plugin's log (the
session's scans look in etcd and the controller's log).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from cluster_helpers import (
    PARAMETER_RESOURCE,
    SECRET_RESOURCE,
    can_i,
    coffer_binary,
    kubectl,
    make_namespace,
    role_binding,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]

# What each ServiceAccount of the namespace may do with secrets and parameters.
CSI_SERVICE_ACCOUNTS: dict[str, list[str] | None] = {
    "csi-admin": ["*"],
    "csi-app": ["get"],
    "csi-nobody": None,
}


def make_csi_namespace(name: str) -> None:
    make_namespace(name, with_service_accounts=False)
    items: list[dict] = []
    for account, verbs in CSI_SERVICE_ACCOUNTS.items():
        items.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}})
        if verbs is None:
            continue
        rules = [{"apiGroups": ["coffer.dev"], "resources": ["secrets", "parameters"], "verbs": verbs}]
        if account == "csi-admin":
            rules.append({"apiGroups": ["coffer.dev"], "resources": ["kmskeys"], "verbs": ["*"]})
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": account},
                "rules": rules}
        items += [role, role_binding(account, account, [(name, account)])]
    kubectl("apply", "-n", name, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    wait_until(
        f"the RoleBindings of {name} are in effect (kubectl auth can-i)",
        lambda: [can_i(name, "csi-admin", "update", f"{SECRET_RESOURCE}/any"),
                 can_i(name, "csi-app", "get", f"{PARAMETER_RESOURCE}/any")],
        all,
    )


def test_csi_node_plugin_on_real_mounts_with_real_tokens(cluster, plaintexts, tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the CSI tests mount tmpfs and need root (CI runs as root)", pytrace=False)
    namespace = f"coffer-e2e-csi-{uuid.uuid4().hex[:8]}"
    make_csi_namespace(namespace)
    values_file = tmp_path / "plaintexts"
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    env = dict(os.environ)
    env.update({
        "COFFER_E2E_CSI_NAMESPACE": namespace,
        "COFFER_E2E_API": cluster.controller.endpoint,
        "COFFER_BIN": coffer_binary(),
        "COFFER_E2E_PLAINTEXTS": str(values_file),
        "COFFER_E2E_CSI_LOG_DIR": str(log_dir),
    })
    try:
        result = subprocess.run(
            ["cargo", "test", "--test", "csi_cluster", "--", "--test-threads=1", "--nocapture"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
        )
    finally:
        used = values_file.read_text().split("\n") if values_file.exists() else []
        for value in filter(None, used):
            plaintexts.add(value)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    output = result.stdout + result.stderr
    for line in output.splitlines():
        if line.startswith("[figure]"):
            print(line)
    assert result.returncode == 0, output[-20000:]
    assert "SKIPPED" not in output, output[-5000:]
    passed = [line for line in output.splitlines() if line.startswith("test result: ok.")]
    assert passed and not passed[-1].startswith("test result: ok. 0 passed"), output[-5000:]
    assert used, "the CSI tests registered no value for the scans"

    # The plugin's own log holds none of the values it delivered.
    for log in log_dir.iterdir():
        text = log.read_bytes()
        found = [value for value in used if value and value.encode() in text]
        assert not found, f"{log.name} holds {len(found)} delivered value(s)"
