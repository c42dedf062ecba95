#!/usr/bin/env python3
"""`make bench`, CSI part: `coffer csi` against a real controller and API server.

Starts what `benches/csi.rs` needs, then runs it: the API server KUBECONFIG names, else the
repo's own control plane (e2e/controlplane), started for the run; a `coffer controller` on
loopback; a namespace whose `csi-admin` may do anything with secrets and parameters and whose
`csi-app` may only `get` them. The bench mounts tmpfs, so it runs as root. Run through
e2e/python.sh (it needs `requests`):

    e2e/python.sh benches/csi.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "e2e" / "controlplane"))
sys.path.insert(0, str(REPO_ROOT / "benches"))
import controlplane  # noqa: E402
from cluster import free_port, kubectl  # noqa: E402

ACCOUNTS = {"csi-admin": ["*"], "csi-app": ["get"]}


def namespace_manifest(namespace: str) -> dict:
    items: list[dict] = []
    for account, verbs in ACCOUNTS.items():
        rules = [{"apiGroups": ["coffer.dev"], "resources": ["secrets", "parameters"], "verbs": verbs}]
        if account == "csi-admin":
            rules.append({"apiGroups": ["coffer.dev"], "resources": ["kmskeys"], "verbs": ["*"]})
        items += [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": account, "namespace": namespace}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": account, "namespace": namespace},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
             "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]},
        ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def wait_ready(probe: str, log_path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{probe}/readyz", timeout=2).status_code == 200 and "leading" in log_path.read_text(
                    errors="replace"):
                return
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"controller not ready; see {log_path}")
        time.sleep(0.2)


def run(binary: str, workdir: Path) -> int:
    suffix = uuid.uuid4().hex[:6]
    system, apps = f"coffer-bench-sys-{suffix}", f"coffer-bench-csi-{suffix}"
    for namespace in (system, apps):
        kubectl("create", "namespace", namespace)
    kubectl("apply", "-f", "-", input=json.dumps(namespace_manifest(apps)))
    api_port, probe_port = free_port(), free_port()
    log_path = workdir / "controller.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log_path, "wb") as log:
        controller = subprocess.Popen(
            [binary, "--log-format", "json", "controller", "--insecure-http",
             "--listen", f"127.0.0.1:{api_port}", "--probe-listen", f"127.0.0.1:{probe_port}",
             "--namespace", system, "--audit-log", "off"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    try:
        wait_ready(f"http://127.0.0.1:{probe_port}", log_path, controller)
        # RoleBindings reach the authorizer through an informer.
        deadline = time.monotonic() + 60
        while subprocess.run(["kubectl", "auth", "can-i", "get", "secrets.coffer.dev", "-n", apps, "--as",
                              f"system:serviceaccount:{apps}:csi-app"], capture_output=True, text=True
                             ).stdout.strip() != "yes":
            if time.monotonic() > deadline:
                raise RuntimeError("the bench's RoleBindings never took effect")
            time.sleep(0.5)
        (workdir / "logs").mkdir()
        env.update({
            "COFFER_E2E_CSI_NAMESPACE": apps,
            "COFFER_E2E_API": f"http://127.0.0.1:{api_port}",
            "COFFER_BIN": binary,
            "COFFER_E2E_PLAINTEXTS": str(workdir / "plaintexts"),
            "COFFER_E2E_CSI_LOG_DIR": str(workdir / "logs"),
        })
        return subprocess.run(["cargo", "bench", "--bench", "csi"], cwd=REPO_ROOT, env=env).returncode
    finally:
        controller.terminate()
        controller.wait(timeout=30)
        for namespace in (apps, system):
            subprocess.run(["kubectl", "delete", "namespace", namespace, "--wait=false"], capture_output=True)


def main() -> int:
    if os.geteuid() != 0:
        print("benches/csi.py mounts tmpfs: run it as root", file=sys.stderr)
        return 2
    binary = os.environ.get("COFFER_BIN", str(REPO_ROOT / "target/release/coffer"))
    state = None
    if not os.environ.get("KUBECONFIG"):
        state = REPO_ROOT / "build" / "bench-csi"
        env = controlplane.up(state, controlplane.assets())
        os.environ.update(env)
        os.environ["PATH"] = f"{env[controlplane.ASSETS_ENV]}{os.pathsep}{os.environ['PATH']}"
    try:
        kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
        for crd in ("secrets.coffer.dev", "parameters.coffer.dev"):
            kubectl("wait", "--for", "condition=Established", f"crd/{crd}", "--timeout=60s")
        with tempfile.TemporaryDirectory(prefix="coffer-bench-csi-") as workdir:
            return run(binary, Path(workdir))
    finally:
        if state is not None:
            controlplane.down(state)


if __name__ == "__main__":
    sys.exit(main())
