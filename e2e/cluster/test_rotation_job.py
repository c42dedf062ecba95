"""Rotation by a Kubernetes Job (`coffer::rotation::job`) against the real API server: the Job,
its ServiceAccount, Role and RoleBinding as stored, owned by the Secret resource, and each
step's outcome as the Job's status says.

The tests themselves are Rust (`tests/rotation_job_cluster.rs`): there is no kubelet, so they
play the Job by writing its status. This module gives them a fresh namespace with the CRDs
installed and runs them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

from cluster_helpers import kubectl, kubectl_json, make_namespace

REPO = Path(__file__).resolve().parents[2]


def test_rotation_job_strategy_against_the_api_server(crds):
    namespace = f"coffer-e2e-rotjob-{uuid.uuid4().hex[:8]}"
    make_namespace(namespace, with_service_accounts=False)
    env = dict(os.environ)
    env["COFFER_E2E_ROTATION_JOB_NAMESPACE"] = namespace
    try:
        result = subprocess.run(
            ["cargo", "test", "--test", "rotation_job_cluster", "--", "--test-threads=1"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-20000:]
        assert "SKIPPED" not in output, output[-5000:]
        passed = [line for line in output.splitlines() if line.startswith("test result: ok.")]
        assert passed and not passed[-1].startswith("test result: ok. 0 passed"), output[-5000:]
        # What the tests left: Jobs, and the one account per secret with its Role and binding.
        jobs = kubectl_json("get", "jobs", "-n", namespace)["items"]
        assert jobs and all("coffer.dev/rotation-step" in job["metadata"]["labels"] for job in jobs)
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
