"""`kubectl coffer`, the kubectl plugin (docs/kubectl-coffer.md), on the real control plane.

The plugin binary `kubectl-coffer` is found next to the `coffer` binary under test (COFFER_BIN),
and its directory is put on PATH, so that `kubectl coffer ...` reaches it through kubectl's own
plugin discovery, as a krew install would. Each command runs end to end: values sealed with the
key from the cluster or from a saved key file, applied with kubectl and read back through the
API as a ServiceAccount user of a token kubeconfig; the same sealed text under another name or
namespace refused; rotate, history and status.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from cluster_helpers import (
    READY_TIMEOUT_SECONDS,
    SECRET_RESOURCE,
    PARAMETER_RESOURCE,
    coffer_binary,
    condition,
    create_token,
    is_parameter_ready,
    is_ready,
    is_secret_ready,
    is_secret_refused,
    kmskey_manifest,
    kubectl,
    secret_manifest,
    token_kubeconfig,
    wait_for_coffer_secret,
    wait_for_kmskey,
    wait_for_parameter,
    wait_for_secret_ready,
)

PLUGIN = "kubectl-coffer"
COMMAND_TIMEOUT_SECONDS = 60
UNHEALTHY_EXIT_CODE = 3


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def plugin_dir() -> Path:
    """The directory holding `kubectl-coffer`, next to the `coffer` binary under test."""
    folder = Path(coffer_binary()).resolve().parent
    binary = folder / PLUGIN
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"{binary} not found: build it with `cargo build --bins`", pytrace=False)
    return folder


def plugin_env(plugin_dir: Path, kubeconfig: Path | None = None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("AWS_") and name != "COFFER_ENDPOINT"}
    env["PATH"] = f"{plugin_dir}{os.pathsep}{env.get('PATH', '')}"
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def run(plugin_dir: Path, *args: str, kubeconfig: Path | None = None, input: bytes | None = None,
        via_kubectl: bool = False, expect: int = 0) -> subprocess.CompletedProcess:
    """`kubectl-coffer ARGS` (or `kubectl coffer ARGS`); fails the test unless it exits `expect`."""
    command = ["kubectl", "coffer", *args] if via_kubectl else [str(plugin_dir / PLUGIN), *args]
    result = subprocess.run(command, input=input, capture_output=True, timeout=COMMAND_TIMEOUT_SECONDS,
                            env=plugin_env(plugin_dir, kubeconfig),
                            stdin=None if input is not None else subprocess.DEVNULL)
    if result.returncode != expect:
        pytest.fail(f"`{' '.join(command)}` exited with {result.returncode}, not {expect}:\n"
                    f"{result.stderr.decode(errors='replace')}{result.stdout.decode(errors='replace')}",
                    pytrace=False)
    return result


def apply_text(manifest: str) -> None:
    kubectl("apply", "-f", "-", input=manifest)


def sealing_key_in(namespace: str, name: str = "kc-sealing") -> dict:
    kubectl("apply", "-f", "-", input=json.dumps(
        kmskey_manifest(name, namespace, keySpec="RSA_2048", keyUsage="ENCRYPT_DECRYPT")))
    return wait_for_kmskey(namespace, name, "is Ready with status.publicKey",
                           lambda o: is_ready(o) and bool(o["status"].get("publicKey")),
                           timeout=READY_TIMEOUT_SECONDS)


@pytest.fixture(scope="module")
def reader_kubeconfig(secrets_ns, tmp_path_factory) -> Path:
    """A kubeconfig whose user is ServiceAccount sm-reader (get on secrets.coffer.dev), with a
    token for the audience coffer."""
    path = tmp_path_factory.mktemp("kubectl-coffer") / "reader.kubeconfig"
    return token_kubeconfig(path, create_token(secrets_ns.name, "sm-reader"))


def test_seal_apply_and_get_as_a_service_account(cluster, secrets_ns, plaintexts, plugin_dir,
                                                 reader_kubeconfig, tmp_path):
    namespace = secrets_ns.name
    endpoint = cluster.controller.endpoint
    key = sealing_key_in(namespace)
    name = unique("kc-sealed")
    value = plaintexts.new()

    # Sealed with the key from the cluster, through kubectl's plugin discovery.
    sealed = run(plugin_dir, "seal", name, "--key", "kc-sealing", "-n", namespace,
                 input=value.encode(), via_kubectl=True)
    manifest = sealed.stdout.decode()
    assert value not in manifest and value not in sealed.stderr.decode()
    assert f"name: {name}" in manifest and f"namespace: {namespace}" in manifest
    assert "sealedValue: Q1NWM" in manifest, manifest  # base64 of the magic "CSV1"
    apply_text(manifest)
    wait_for_secret_ready(namespace, name)

    # Read back as sm-reader, a ServiceAccount kubeconfig user with `get`.
    got = run(plugin_dir, "-n", namespace, "get", name, "--endpoint", endpoint, kubeconfig=reader_kubeconfig)
    assert got.stdout.decode() == value
    got = run(plugin_dir, "get", "secret", name, "-n", namespace, "--endpoint", endpoint,
              "--stage", "AWSCURRENT", kubeconfig=reader_kubeconfig)
    assert got.stdout.decode() == value

    # sm-nobody has no RBAC on secrets: refused, with the exception named.
    nobody = token_kubeconfig(tmp_path / "nobody.kubeconfig", create_token(namespace, "sm-nobody"))
    denied = run(plugin_dir, "get", name, "-n", namespace, "--endpoint", endpoint, kubeconfig=nobody, expect=1)
    assert b"AccessDeniedException" in denied.stderr and b"RBAC" in denied.stderr, denied.stderr
    assert value.encode() not in denied.stderr + denied.stdout

    # The cluster's own admin user (a client certificate on the repo's control plane) has no
    # token for Coffer: a clear error. With --service-account it asks for a token of one
    # (TokenRequest) and reads as that account.
    admin = run(plugin_dir, "get", name, "-n", namespace, "--endpoint", endpoint, expect=1)
    assert b"client certificate" in admin.stderr or b"audience" in admin.stderr, admin.stderr
    got = run(plugin_dir, "get", name, "-n", namespace, "--endpoint", endpoint, "--service-account", "sm-reader")
    assert got.stdout.decode() == value

    # The same sealed text under another name, and in another namespace: refused.
    other = unique("kc-elsewhere")
    apply_text(manifest.replace(f"name: {name}", f"name: {other}"))
    refused = wait_for_coffer_secret(namespace, other, "is Ready False with a reason and a message",
                                     is_secret_refused)
    assert condition(refused, "Ready")["reason"] == "SealedValueRefused", refused["status"]
    assert value not in json.dumps(refused)
    moved = manifest.replace(f"namespace: {namespace}", f"namespace: {cluster.namespace}")
    apply_text(moved)
    try:
        refused = wait_for_coffer_secret(cluster.namespace, name, "is Ready False with a reason and a message",
                                         is_secret_refused)
        assert condition(refused, "Ready")["reason"] == "SealedValueRefused", refused["status"]
        assert value not in json.dumps(refused)
    finally:
        kubectl("delete", SECRET_RESOURCE, name, "-n", cluster.namespace, "--ignore-not-found", "--wait=true")
    for_other = run(plugin_dir, "get", other, "-n", namespace, "--endpoint", endpoint,
                    kubeconfig=reader_kubeconfig, expect=1)
    assert value.encode() not in for_other.stdout + for_other.stderr


def test_offline_sealing_from_a_saved_key(cluster, secrets_ns, plaintexts, plugin_dir, reader_kubeconfig,
                                          tmp_path):
    namespace = secrets_ns.name
    key = sealing_key_in(namespace)
    key_file = tmp_path / "key.json"
    run(plugin_dir, "public-key", "kc-sealing", "-n", namespace, "-o", str(key_file))
    saved = json.loads(key_file.read_text())
    assert saved["keyId"] == key["status"]["keyId"] and saved["namespace"] == namespace, saved
    assert saved["publicKey"] == key["status"]["publicKey"]

    # No cluster at all: the kubeconfig names a file that does not exist.
    offline = tmp_path / "no-such-kubeconfig"
    name = unique("kc-offline")
    value = plaintexts.new()
    value_file = tmp_path / "value"
    value_file.write_bytes(value.encode())
    out = tmp_path / "sealed.yaml"
    run(plugin_dir, "seal", name, "--public-key-file", str(key_file), "--from-file", str(value_file),
        "-o", str(out), kubeconfig=offline)
    value_file.unlink()
    manifest = out.read_text()
    assert value not in manifest
    apply_text(manifest)
    wait_for_secret_ready(namespace, name)
    got = run(plugin_dir, "get", name, "-n", namespace, "--endpoint", cluster.controller.endpoint,
              kubeconfig=reader_kubeconfig)
    assert got.stdout.decode() == value

    # The saved key is of `namespace`: sealing for another namespace is refused up front.
    refused = run(plugin_dir, "seal", name, "-n", cluster.namespace, "--public-key-file", str(key_file),
                  input=b"x", kubeconfig=offline, expect=1)
    assert b"namespace" in refused.stderr, refused.stderr


def test_sealed_parameter(cluster, params_ns, plaintexts, plugin_dir, tmp_path):
    namespace = params_ns.name
    sealing_key_in(namespace)
    resource = unique("kc-param")
    name = f"/kc/{resource}"
    value = plaintexts.new()
    sealed = run(plugin_dir, "seal", resource, "--kind", "parameter", "--parameter-name", name,
                 "--key", "kc-sealing", "-n", namespace, input=value.encode())
    manifest = sealed.stdout.decode()
    assert value not in manifest and "type: SecureString" in manifest
    apply_text(manifest)
    wait_for_parameter(namespace, resource, "is Ready", is_parameter_ready, timeout=READY_TIMEOUT_SECONDS)
    reader = token_kubeconfig(tmp_path / "ps-reader.kubeconfig", create_token(namespace, "ps-reader"))
    got = run(plugin_dir, "get", "parameter", name, "-n", namespace, "--endpoint", cluster.controller.endpoint,
              kubeconfig=reader)
    assert got.stdout.decode() == value
    kubectl("delete", PARAMETER_RESOURCE, resource, "-n", namespace, "--wait=true")


def test_rotate_and_history(cluster, secrets_ns, plaintexts, plugin_dir, tmp_path):
    namespace = secrets_ns.name
    endpoint = cluster.controller.endpoint
    name = unique("kc-rot")
    kubectl("apply", "-f", "-", input=json.dumps(secret_manifest(
        name, namespace,
        generate={"length": 20, "excludePunctuation": True},
        rotation={"schedule": "rate(30 days)"},
    )))
    first = wait_for_secret_ready(namespace, name)["status"]["currentVersion"]
    admin = token_kubeconfig(tmp_path / "sm-admin.kubeconfig", create_token(namespace, "sm-admin"))
    before = run(plugin_dir, "get", name, "-n", namespace, "--endpoint", endpoint, kubeconfig=admin)
    plaintexts.add(before.stdout.decode())

    rotated = run(plugin_dir, "rotate", name, "-n", namespace, "--endpoint", endpoint, kubeconfig=admin)
    text = rotated.stdout.decode()
    assert "rotation started" in text and "new version: " in text, text
    token = text.split("new version: ", 1)[1].split()[0]
    wait_for_coffer_secret(namespace, name, "the rotated version as current",
                           lambda obj: is_secret_ready(obj) and obj["status"]["currentVersion"] == token)

    listed = run(plugin_dir, "history", name, "-n", namespace, "--endpoint", endpoint, "-o", "json",
                 kubeconfig=admin)
    versions = {entry["VersionId"]: entry["VersionStages"] for entry in json.loads(listed.stdout)}
    assert versions == {token: ["AWSCURRENT"], first: ["AWSPREVIOUS"]}, versions
    table = run(plugin_dir, "history", name, "-n", namespace, "--endpoint", endpoint, kubeconfig=admin)
    lines = table.stdout.decode().splitlines()
    assert lines[0].split() == ["VERSION", "ID", "STAGES", "CREATED"], lines
    assert lines[1].split()[:2] == [token, "AWSCURRENT"], lines
    assert lines[2].split()[:2] == [first, "AWSPREVIOUS"], lines

    after = run(plugin_dir, "get", name, "-n", namespace, "--endpoint", endpoint, kubeconfig=admin)
    plaintexts.add(after.stdout.decode())
    assert after.stdout != before.stdout
    previous = run(plugin_dir, "get", name, "-n", namespace, "--endpoint", endpoint, "--stage", "AWSPREVIOUS",
                   kubeconfig=admin)
    assert previous.stdout == before.stdout

    # sm-reader may read but not rotate.
    reader = token_kubeconfig(tmp_path / "sm-reader.kubeconfig", create_token(namespace, "sm-reader"))
    denied = run(plugin_dir, "rotate", name, "-n", namespace, "--endpoint", endpoint, kubeconfig=reader, expect=1)
    assert b"AccessDeniedException" in denied.stderr, denied.stderr


def test_status(cluster, plugin_dir):
    args = ("--coffer-namespace", cluster.system_namespace, "--endpoint", cluster.controller.endpoint)
    healthy = run(plugin_dir, "status", *args, via_kubectl=True)
    lines = healthy.stdout.decode().splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"], lines
    rows = {line.split()[0] + " " + line.split()[1]: line.split()[2] for line in lines[1:]}
    for crd in ("kmskeys.coffer.dev", "secrets.coffer.dev", "parameters.coffer.dev"):
        assert rows[f"crd {crd}"] == "ok", lines
    assert rows[f"lease {cluster.system_namespace}/coffer-controller"] == "ok", lines
    assert rows[f"api {cluster.controller.endpoint}"] == "ok", lines
    # The session's controller runs on this machine, not as a Deployment.
    assert rows[f"deployment {cluster.system_namespace}/coffer"] == "warning", lines

    # Where no controller holds the Lease: unhealthy, exit code 3.
    nowhere = run(plugin_dir, "status", "--coffer-namespace", unique("coffer-e2e-none"),
                  "--endpoint", cluster.controller.endpoint, expect=UNHEALTHY_EXIT_CODE)
    assert b"FAILED" in nowhere.stdout and b"no leader" in nowhere.stdout, nowhere.stdout

    # Plain http:// goes to loopback only.
    refused = run(plugin_dir, "status", "--endpoint", "http://192.0.2.1:8443", expect=UNHEALTHY_EXIT_CODE)
    assert b"loopback" in refused.stdout, refused.stdout
