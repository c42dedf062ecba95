"""Helpers for the cluster end-to-end suite: kubectl, the controller process, the KMS API.

Kept out of conftest.py under a name of its own, so that `from cluster_helpers import ...` in the
test modules cannot pick up the KMS suite's conftest when both suites run in one pytest session.

Everything talks to the cluster through `kubectl ... -o json` subprocesses: no Kubernetes client
library is needed beyond e2e/requirements.txt.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

REGION = "us-east-1"
REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"
DEFAULT_BINARY = REPO_ROOT / "target" / "debug" / "coffer"

# run-cluster.sh checks for a cluster before anything is built and hands its verdict down in this
# variable (empty: a cluster is reachable), so the check and the banner are not repeated.
SKIP_ENV = "COFFER_E2E_CLUSTER_SKIP"

READY_TIMEOUT_SECONDS = 60
RECONCILE_TIMEOUT_SECONDS = 30
NAMESPACE_DELETE_TIMEOUT_SECONDS = 180
DAY_SECONDS = 86400
KUBECTL_TIMEOUT_SECONDS = 60

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
KEY_ID_LABEL = "coffer.dev/key-id"
NAMESPACE_LABEL = "coffer.dev/namespace"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
KEY_RECORD_ANNOTATION = "coffer.dev/key-record"
KMSKEY_NAME_ANNOTATION = "coffer.dev/kmskey-name"
KMSKEY_UID_ANNOTATION = "coffer.dev/kmskey-uid"
COMPANION_SECRET_TYPE = "coffer.dev/kmskey"
ROOT_KEY_SECRET = "coffer-root-key"
LEASE_NAME = "coffer-controller"
KNOWN_EVENT_REASONS = {
    "Created",
    "Enabled",
    "Disabled",
    "Rotated",
    "DeletionScheduled",
    "DeletionCancelled",
    "Deleted",
    "AliasConflict",
}

# Verbs on kmskeys.coffer.dev that the API checks with SubjectAccessReview.
ALL_KEY_VERBS = ["encrypt", "decrypt", "generatedatakey", "reencrypt", "sign", "verify", "describe", "admin"]


# --------------------------------------------------------------------------------------------
# Is there a cluster at all?
# --------------------------------------------------------------------------------------------


def banner(reason: str) -> str:
    return f"=== e2e/cluster SKIPPED: no Kubernetes cluster reachable ({reason}) ==="


def cluster_skip_reason() -> str | None:
    """Why the suite cannot run here, or None when kubectl reaches an API server.

    e2e/run-cluster.sh decides (and starts the repo's own control plane when it can) and hands
    its verdict down. Run by hand, pytest needs KUBECONFIG set and answering: ~/.kube/config
    alone is never used, so that the suite cannot wander into a cluster nobody chose."""
    if SKIP_ENV in os.environ:
        return os.environ[SKIP_ENV] or None
    if shutil.which("kubectl") is None:
        return "kubectl not installed"
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not kubeconfig:
        return "KUBECONFIG unset (run e2e/run-cluster.sh to start the repo's own control plane)"
    files = [part for part in kubeconfig.split(os.pathsep) if part]
    if not any(os.path.isfile(part) for part in files):
        return f"KUBECONFIG={kubeconfig} names no existing file"
    try:
        result = subprocess.run(
            ["kubectl", "version", "--request-timeout=5s", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return "kubectl version timed out"
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        return "kubectl version failed: " + (lines[-1] if lines else f"exit code {result.returncode}")
    return None


# --------------------------------------------------------------------------------------------
# kubectl
# --------------------------------------------------------------------------------------------


def kubectl(*args: str, input: str | None = None, check: bool = True,
            timeout: float = KUBECTL_TIMEOUT_SECONDS) -> subprocess.CompletedProcess:
    """Runs `kubectl ARGS`; with `check`, a non-zero exit fails the test with stderr."""
    command = ["kubectl", *args]
    try:
        result = subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(command)}` did not finish within {timeout}s", pytrace=False)
    if check and result.returncode != 0:
        pytest.fail(
            f"`{' '.join(command)}` exited with {result.returncode}:\n{result.stderr}{result.stdout}",
            pytrace=False,
        )
    return result


def kubectl_json(*args: str) -> Any:
    """`kubectl ARGS -o json`, parsed; None when the object does not exist."""
    result = kubectl(*args, "--ignore-not-found", "-o", "json")
    text = result.stdout.strip()
    return json.loads(text) if text else None


def apply(manifest: dict, namespace: str | None = None) -> None:
    args = ["apply", "-f", "-"]
    if namespace:
        args += ["-n", namespace]
    kubectl(*args, input=json.dumps(manifest))


def get_kmskey(namespace: str, name: str) -> dict | None:
    return kubectl_json("get", "kmskeys.coffer.dev", name, "-n", namespace)


def get_secret(namespace: str, name: str) -> dict | None:
    return kubectl_json("get", "secret", name, "-n", namespace)


def token_kubeconfig(path: Path, token: str) -> Path:
    """A kubeconfig for the current cluster that authenticates with `token` (a ServiceAccount's),
    so that a process runs with exactly that account's permissions."""
    current = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = current["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": "e2e", "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
        "current-context": "e2e",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def companion_name(namespace: str, key_id: str) -> str:
    """The Secret holding a key's wrapped material and record, in the controller's namespace."""
    return f"kmskey-{namespace}.{key_id}"


def get_companion(system_namespace: str, namespace: str, key_id: str) -> dict | None:
    return get_secret(system_namespace, companion_name(namespace, key_id))


def key_record(system_namespace: str, namespace: str, key_id: str) -> dict | None:
    """The key's metadata record, as the controller keeps it (None when the key is gone)."""
    secret = get_companion(system_namespace, namespace, key_id)
    if secret is None:
        return None
    return json.loads((secret["metadata"].get("annotations") or {})[KEY_RECORD_ANNOTATION])


def events_for(namespace: str, kind: str, name: str) -> list[dict]:
    data = kubectl_json(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.kind={kind},involvedObject.name={name}",
    )
    return (data or {}).get("items", [])


def event_reasons(namespace: str, name: str) -> list[str]:
    return [event.get("reason", "") for event in events_for(namespace, "KmsKey", name)]


def condition(obj: dict | None, kind: str) -> dict | None:
    for entry in ((obj or {}).get("status") or {}).get("conditions") or []:
        if entry.get("type") == kind:
            return entry
    return None


def create_token(namespace: str, service_account: str) -> str:
    result = kubectl(
        "create", "token", service_account, "-n", namespace, "--audience", "coffer", "--duration", "1h"
    )
    token = result.stdout.strip()
    assert token.count(".") == 2, f"not a JWT from kubectl create token: {token[:40]!r}"
    return token


def can_i(namespace: str, service_account: str, verb: str, resource: str) -> bool:
    """`kubectl auth can-i VERB RESOURCE -n NS --as system:serviceaccount:NS:SA`."""
    result = kubectl(
        "auth",
        "can-i",
        verb,
        resource,
        "-n",
        namespace,
        "--as",
        f"system:serviceaccount:{namespace}:{service_account}",
        check=False,
    )
    answer = result.stdout.strip()
    if answer not in ("yes", "no"):
        pytest.fail(f"kubectl auth can-i {verb} {resource}: unexpected answer {answer!r} {result.stderr}",
                    pytrace=False)
    return answer == "yes"


# --------------------------------------------------------------------------------------------
# Namespaces of the suite
# --------------------------------------------------------------------------------------------

E2E_LABEL = "coffer.dev/e2e"

# Service accounts of the application namespace and what they may do on kmskeys.coffer.dev.
# `None` for resource names means every KmsKey of the namespace (and CreateKey, ListKeys).
SERVICE_ACCOUNTS: dict[str, tuple[list[str], list[str] | None] | None] = {
    "e2e-admin": (ALL_KEY_VERBS, None),
    "e2e-app": (["encrypt", "decrypt", "generatedatakey", "reencrypt", "describe"], ["app"]),
    "e2e-decrypt": (["decrypt"], ["app"]),
    "e2e-nobody": None,
}


def rbac_manifests(namespace: str) -> dict:
    items: list[dict] = []
    for name, grant in SERVICE_ACCOUNTS.items():
        items.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})
        if grant is None:
            continue
        verbs, resource_names = grant
        rule: dict = {"apiGroups": ["coffer.dev"], "resources": ["kmskeys"], "verbs": verbs}
        if resource_names is not None:
            rule["resourceNames"] = resource_names
        items.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": name},
                "rules": [rule],
            }
        )
        items.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            }
        )
    return {"apiVersion": "v1", "kind": "List", "items": items}


def make_namespace(name: str, with_service_accounts: bool = True) -> None:
    """A namespace labelled as the suite's, with the service accounts above and their RBAC,
    waited for until `kubectl auth can-i` agrees (RoleBindings reach the authorizer through an
    informer)."""
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {E2E_LABEL: "true"}}}
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    if not with_service_accounts:
        return
    kubectl("apply", "-n", name, "-f", "-", input=json.dumps(rbac_manifests(name)))
    wait_until(
        f"the e2e RoleBindings of {name} are in effect (kubectl auth can-i)",
        lambda: [can_i(name, "e2e-admin", "admin", "kmskeys.coffer.dev"),
                 can_i(name, "e2e-app", "encrypt", "kmskeys.coffer.dev/app")],
        all,
    )


def delete_namespace(name: str, wait: bool = True) -> None:
    """`kubectl delete namespace`; with `wait`, fails the test unless it is gone within the
    timeout. Nothing of Coffer's holds a namespace up."""
    kubectl("delete", "namespace", name, "--ignore-not-found", f"--wait={str(wait).lower()}",
            f"--timeout={NAMESPACE_DELETE_TIMEOUT_SECONDS}s", timeout=NAMESPACE_DELETE_TIMEOUT_SECONDS + 30)


# --------------------------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------------------------


def _show(observed: Any, limit: int = 6000) -> str:
    if observed is None:
        return "None (for a kubectl get: the object does not exist)"
    if isinstance(observed, str):
        text = observed
    else:
        try:
            text = json.dumps(observed, indent=2, sort_keys=True, default=str)
        except (TypeError, ValueError):
            text = repr(observed)
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


def wait_until(description: str, observe: Callable[[], Any], done: Callable[[Any], bool],
               timeout: float = RECONCILE_TIMEOUT_SECONDS, interval: float = 0.5) -> Any:
    """Calls `observe()` until `done(observed)` holds, and returns what was observed then.

    On timeout the test fails with `description` and the last observed value (or the last
    exception raised while observing)."""
    deadline = time.monotonic() + timeout
    observed: Any = None
    last_error: str | None = None
    while True:
        try:
            observed = observe()
            last_error = None
            if done(observed):
                return observed
        except (AssertionError, KeyError, TypeError, ValueError, requests.RequestException) as error:
            last_error = f"{type(error).__name__}: {error}"
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    message = f"timed out after {timeout:.0f}s waiting until {description}\nlast observed:\n{_show(observed)}"
    if last_error:
        message += f"\nlast error while observing: {last_error}"
    pytest.fail(message, pytrace=False)


def wait_for_kmskey(namespace: str, name: str, description: str, done: Callable[[dict], bool],
                    timeout: float = RECONCILE_TIMEOUT_SECONDS) -> dict:
    return wait_until(
        f"KmsKey {namespace}/{name} {description}",
        lambda: get_kmskey(namespace, name),
        lambda obj: obj is not None and bool(done(obj)),
        timeout,
    )


def wait_for_key_state(namespace: str, name: str, state: str,
                       timeout: float = RECONCILE_TIMEOUT_SECONDS) -> dict:
    return wait_for_kmskey(
        namespace,
        name,
        f"has status.keyState {state} for its current generation",
        lambda obj: (obj.get("status") or {}).get("keyState") == state
        and (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"],
        timeout,
    )


def wait_for_event(namespace: str, name: str, reason: str,
                   timeout: float = RECONCILE_TIMEOUT_SECONDS) -> list[str]:
    return wait_until(
        f"an Event with reason {reason} is recorded on KmsKey {namespace}/{name}",
        lambda: event_reasons(namespace, name),
        lambda reasons: reason in reasons,
        timeout,
    )


def is_ready(obj: dict) -> bool:
    status = obj.get("status") or {}
    ready = condition(obj, "Ready")
    return (
        bool(status.get("keyId"))
        and status.get("observedGeneration") == obj["metadata"]["generation"]
        and ready is not None
        and ready.get("status") == "True"
    )


def kmskey_manifest(name: str, namespace: str, **spec: Any) -> dict:
    return {
        "apiVersion": "coffer.dev/v1alpha1",
        "kind": "KmsKey",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


# The session's main key: `kubectl apply` of exactly this manifest creates it, and re-applying it
# after `kubectl delete` cancels the scheduled deletion.
APP_KEY = "app"
APP_ALIAS = "e2e/app"


def app_key_manifest(namespace: str) -> dict:
    return kmskey_manifest(APP_KEY, namespace, aliases=[APP_ALIAS], description="e2e")


# --------------------------------------------------------------------------------------------
# The controller process
# --------------------------------------------------------------------------------------------


def coffer_binary() -> str:
    """The binary: $COFFER_BIN, else target/debug/coffer in the repository."""
    path = os.environ.get("COFFER_BIN") or str(DEFAULT_BINARY)
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.fail(
            f"coffer binary not found at {path}: build it (cargo build --bin coffer) or set COFFER_BIN",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment() -> dict[str, str]:
    """This process's environment without any AWS_* variable."""
    return {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}


class Controller:
    """`coffer controller` run locally against the current kubeconfig."""

    def __init__(self, binary: str, system_namespace: str, log_path: Path, kubeconfig: Path | None = None,
                 extra_args: tuple[str, ...] = (), tls: tuple[Path, Path] | None = None):
        self.binary = binary
        self.extra_args = extra_args
        # (certificate, key) PEM files: HTTPS on the API's port, as kube-apiserver needs to call
        # the admission webhook; plain HTTP otherwise.
        self.tls = tls
        self.system_namespace = system_namespace
        self.log_path = log_path
        self.kubeconfig = kubeconfig
        self.api_port = free_port()
        self.probe_port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.api_port}"

    @property
    def probe_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.probe_port}"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--log-format",
            "json",
            "controller",
            *(("--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])) if self.tls else ("--insecure-http",)),
            "--listen",
            f"127.0.0.1:{self.api_port}",
            "--probe-listen",
            f"127.0.0.1:{self.probe_port}",
            "--namespace",
            self.system_namespace,
            *self.extra_args,
        ]

    def start(self) -> None:
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
            )
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"coffer controller exited with {code} before /readyz answered 200\n"
                    f"command: {' '.join(self.command())}\n--- log ---\n{self.log_tail()}"
                )
            try:
                response = requests.get(f"{self.probe_endpoint}/readyz", timeout=2)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except requests.RequestException as error:
                last = f"{type(error).__name__}: {error}"
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(
            f"coffer controller not ready within {READY_TIMEOUT_SECONDS}s (last /readyz: {last})\n"
            f"--- log ---\n{self.log_tail()}"
        )

    def environment(self) -> dict[str, str]:
        env = clean_environment()
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        return process.returncode


# --------------------------------------------------------------------------------------------
# The KMS API with bearer tokens
# --------------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def error_code(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("__type", "")).rsplit("#", 1)[-1]


@dataclass
class KmsApi:
    """AWS KMS JSON 1.1 calls with `Authorization: Bearer TOKEN`."""

    endpoint: str
    calls: list[str] = field(default_factory=list)

    def call(self, operation: str, body: dict | None, token: str) -> requests.Response:
        self.calls.append(operation)
        return requests.post(
            self.endpoint + "/",
            data=json.dumps(body or {}),
            headers={
                "Content-Type": JSON_CONTENT_TYPE,
                "X-Amz-Target": f"TrentService.{operation}",
                "Authorization": f"Bearer {token}",
            },
            timeout=60,
        )

    def ok(self, operation: str, body: dict | None, token: str) -> dict:
        response = self.call(operation, body, token)
        assert response.status_code == 200, (
            f"{operation} answered HTTP {response.status_code}: {response.text[:2000]}"
        )
        assert response.headers.get("x-amzn-RequestId"), f"{operation}: no x-amzn-RequestId header"
        return response.json()

    def error(self, operation: str, body: dict | None, token: str, code: str, status: int = 400) -> dict:
        response = self.call(operation, body, token)
        assert error_code(response) == code, (
            f"{operation}: expected {code}, got HTTP {response.status_code}: {response.text[:2000]}"
        )
        assert response.status_code == status, f"{operation}: {code} with HTTP {response.status_code}"
        header = response.headers.get("x-amzn-ErrorType", "")
        assert header.split(":")[0] == code, f"{operation}: x-amzn-ErrorType header is {header!r}"
        return response.json()

    # Shorthands for the operations the tests use most.

    def encrypt(self, key_id: str, plaintext: bytes, token: str) -> dict:
        return self.ok("Encrypt", {"KeyId": key_id, "Plaintext": b64(plaintext)}, token)

    def decrypt(self, ciphertext: str, token: str, key_id: str | None = None) -> bytes:
        body = {"CiphertextBlob": ciphertext}
        if key_id:
            body["KeyId"] = key_id
        return unb64(self.ok("Decrypt", body, token)["Plaintext"])

    def describe(self, key_id: str, token: str) -> dict:
        return self.ok("DescribeKey", {"KeyId": key_id}, token)["KeyMetadata"]


# --------------------------------------------------------------------------------------------
# Secrets (secrets.coffer.dev) and the Secrets Manager API
# --------------------------------------------------------------------------------------------

SECRET_RESOURCE = "secrets.coffer.dev"
SECRET_NAME_ANNOTATION = "coffer.dev/secret-name"
# How long a change of a fromSecret source may take to be imported: the controller looks at
# its sources again about every 30 s.
SOURCE_RECHECK_TIMEOUT_SECONDS = 90
# The marker every test value of the Secrets tests starts with, so that a leak is recognisable.
PLAINTEXT_MARKER = "e2e-plain-"


def secret_manifest(name: str, namespace: str, annotations: dict[str, str] | None = None,
                    **spec: Any) -> dict:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "coffer.dev/v1alpha1", "kind": "Secret", "metadata": metadata, "spec": spec}


def get_coffer_secret(namespace: str, name: str) -> dict | None:
    return kubectl_json("get", SECRET_RESOURCE, name, "-n", namespace)


def list_coffer_secrets(namespace: str) -> list[dict]:
    return (kubectl_json("get", SECRET_RESOURCE, "-n", namespace) or {}).get("items", [])


def is_secret_reconciled(obj: dict) -> bool:
    """The status describes the current generation."""
    return (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]


def is_secret_ready(obj: dict) -> bool:
    """Reconciled for its generation, with an ARN, a current version, and Ready True."""
    status = obj.get("status") or {}
    ready = condition(obj, "Ready")
    return (
        is_secret_reconciled(obj)
        and bool(status.get("arn"))
        and bool(status.get("currentVersion"))
        and ready is not None
        and ready.get("status") == "True"
    )


def is_secret_refused(obj: dict) -> bool:
    """Reconciled for its generation with Ready False, a reason and a message."""
    ready = condition(obj, "Ready")
    return (
        is_secret_reconciled(obj)
        and ready is not None
        and ready.get("status") == "False"
        and bool(ready.get("reason"))
        and bool(ready.get("message"))
    )


def wait_for_coffer_secret(namespace: str, name: str, description: str, done: Callable[[dict], bool],
                           timeout: float = RECONCILE_TIMEOUT_SECONDS) -> dict:
    return wait_until(
        f"Secret {namespace}/{name} {description}",
        lambda: get_coffer_secret(namespace, name),
        lambda obj: obj is not None and bool(done(obj)),
        timeout,
    )


def wait_for_secret_ready(namespace: str, name: str, timeout: float = READY_TIMEOUT_SECONDS) -> dict:
    return wait_for_coffer_secret(namespace, name, "is Ready for its generation, with an ARN and a current version",
                                  is_secret_ready, timeout)


def wait_for_secret_gone(namespace: str, name: str, timeout: float = RECONCILE_TIMEOUT_SECONDS) -> None:
    wait_until(f"Secret {namespace}/{name} no longer exists",
               lambda: get_coffer_secret(namespace, name), lambda obj: obj is None, timeout)


def version_stages(obj: dict) -> dict[str, list[str]]:
    """status.versions as DescribeSecret's VersionIdsToStages: version id -> sorted stages."""
    return {
        version["versionId"]: sorted(version.get("stages") or [])
        for version in (obj.get("status") or {}).get("versions") or []
    }


SECRET_RECORD_TYPE = "coffer.dev/secret"
SECRET_RECORD_ANNOTATION = "coffer.dev/secret-record"


def secret_record(system_namespace: str, namespace: str, secret_name: str) -> dict | None:
    """The metadata record the controller keeps for a secret in its own namespace (docs/secrets.md,
    "Where things live"), found by its namespace label and the name it records; None when absent."""
    found = kubectl_json("get", "secrets", "-n", system_namespace, "-l", f"{NAMESPACE_LABEL}={namespace}")
    for obj in (found or {}).get("items", []):
        if obj.get("type") != SECRET_RECORD_TYPE:
            continue
        annotation = (obj["metadata"].get("annotations") or {}).get(SECRET_RECORD_ANNOTATION)
        record = json.loads(annotation) if annotation else None
        if record and record.get("name") == secret_name:
            return record
    return None


def temporary_credentials(endpoint: str, token: str) -> dict:
    """What the container credentials endpoint gives for a ServiceAccount token."""
    response = requests.get(f"{endpoint}/v1/credentials", headers={"Authorization": token}, timeout=30)
    assert response.status_code == 200, (
        f"GET /v1/credentials answered HTTP {response.status_code}: {response.text[:1000]}"
    )
    return response.json()


def secrets_client(endpoint: str, namespace: str, service_account: str):
    """A boto3 Secrets Manager client signing with the temporary credentials of a ServiceAccount
    (from the credentials endpoint, for a token with audience `coffer`). Never retries."""
    return service_client("secretsmanager", endpoint, namespace, service_account)


def service_client(service: str, endpoint: str, namespace: str, service_account: str):
    """A boto3 client of `service` (secretsmanager, ssm) signing with the temporary credentials
    of a ServiceAccount (from the credentials endpoint, for a token with audience `coffer`).
    Never retries."""
    import boto3
    from botocore.config import Config

    credentials = temporary_credentials(endpoint, create_token(namespace, service_account))
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["Token"],
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=60),
    )


def secret_role(name: str, verbs: list[str], resource_names: list[str] | None = None,
                kind: str = "Role") -> dict:
    rule: dict = {"apiGroups": ["coffer.dev"], "resources": ["secrets"], "verbs": verbs}
    if resource_names is not None:
        rule["resourceNames"] = resource_names
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name},
            "rules": [rule]}


def role_binding(name: str, role: str, subjects: list[tuple[str, str]], kind: str = "RoleBinding") -> dict:
    """A (Cluster)RoleBinding of `role` (a Role for a RoleBinding, else a ClusterRole) to
    ServiceAccounts given as (namespace, name)."""
    role_kind = "Role" if kind == "RoleBinding" else "ClusterRole"
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns} for ns, sa in subjects],
    }


# ServiceAccounts of a Secrets namespace and their verbs on secrets.coffer.dev (None: no Role).
SECRETS_SERVICE_ACCOUNTS: dict[str, list[str] | None] = {
    "sm-admin": ["*"],
    "sm-reader": ["get"],
    "sm-nobody": None,
}


def make_secrets_namespace(name: str) -> None:
    """A namespace of the suite whose sm-admin may do anything with secrets.coffer.dev (and
    kmskeys), sm-reader only `get`, and sm-nobody nothing; waited for until `kubectl auth can-i`
    agrees."""
    make_namespace(name, with_service_accounts=False)
    items: list[dict] = []
    for account, verbs in SECRETS_SERVICE_ACCOUNTS.items():
        items.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}})
        if verbs is None:
            continue
        role = secret_role(account, verbs)
        if account == "sm-admin":
            role["rules"].append({"apiGroups": ["coffer.dev"], "resources": ["kmskeys"], "verbs": ["*"]})
        items += [role, role_binding(account, account, [(name, account)])]
    kubectl("apply", "-n", name, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    wait_until(
        f"the RoleBindings of {name} are in effect (kubectl auth can-i)",
        lambda: [can_i(name, "sm-admin", "create", SECRET_RESOURCE),
                 can_i(name, "sm-reader", "get", f"{SECRET_RESOURCE}/any")],
        all,
    )


def can_i_as(namespace: str, subject: str, verb: str, resource: str) -> bool:
    """`kubectl auth can-i VERB RESOURCE -n NAMESPACE --as SUBJECT`."""
    result = kubectl("auth", "can-i", verb, resource, "-n", namespace, "--as", subject, check=False)
    answer = result.stdout.strip()
    if answer not in ("yes", "no"):
        pytest.fail(f"kubectl auth can-i {verb} {resource} --as {subject}: unexpected answer {answer!r} "
                    f"{result.stderr}", pytrace=False)
    return answer == "yes"


# --------------------------------------------------------------------------------------------
# Parameters (parameters.coffer.dev) and the SSM Parameter Store API
# --------------------------------------------------------------------------------------------

PARAMETER_RESOURCE = "parameters.coffer.dev"


def parameter_manifest(resource: str, namespace: str, /, **spec: Any) -> dict:
    return {"apiVersion": "coffer.dev/v1alpha1", "kind": "Parameter",
            "metadata": {"name": resource, "namespace": namespace}, "spec": spec}


def parameter_resource_name(name: str) -> str:
    """The name of the Parameter resource the store makes for a parameter created through the
    API (docs/authorization.md, "The object name"; `resources::parameter::parameter_resource_name`):
    a path of lower-case DNS labels with its `/` as `.`, else `p-` + a readable part + 10 hex
    digits of SHA-256 of the name."""
    import hashlib
    import re as _re

    label = _re.compile(r"[a-z0-9-]+")
    if name.startswith("/") and "." not in name:
        dotted = name[1:].replace("/", ".")
        if (len(dotted) <= 253 and not dotted.startswith("p-")
                and all(label.fullmatch(part) and not part.startswith("-") and not part.endswith("-")
                        for part in dotted.split("."))):
            return dotted
    readable = ""
    for char in name.lower():
        if char.isascii() and char.isalnum():
            readable += char
        elif not readable.endswith("-"):
            readable += "-"
        if len(readable) >= 40:
            break
    readable = readable.strip("-")
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"p-{readable}-{digest}" if readable else f"p-{digest}"


def get_parameter_resource(namespace: str, name: str) -> dict | None:
    return kubectl_json("get", PARAMETER_RESOURCE, name, "-n", namespace)


def list_parameter_resources(namespace: str) -> list[dict]:
    return (kubectl_json("get", PARAMETER_RESOURCE, "-n", namespace) or {}).get("items", [])


def is_parameter_reconciled(obj: dict) -> bool:
    """The status describes the current generation."""
    return (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]


def is_parameter_ready(obj: dict) -> bool:
    """Reconciled for its generation, with a version, and Ready True (reason Available)."""
    ready = condition(obj, "Ready")
    return (
        is_parameter_reconciled(obj)
        and bool((obj.get("status") or {}).get("version"))
        and ready is not None
        and ready.get("status") == "True"
        and ready.get("reason") == "Available"
    )


def is_parameter_refused(obj: dict, reason: str) -> bool:
    """Reconciled for its generation with Ready False, the given reason and a message."""
    ready = condition(obj, "Ready")
    return (
        is_parameter_reconciled(obj)
        and ready is not None
        and ready.get("status") == "False"
        and ready.get("reason") == reason
        and bool(ready.get("message"))
    )


def wait_for_parameter(namespace: str, name: str, description: str, done: Callable[[dict], bool],
                       timeout: float = RECONCILE_TIMEOUT_SECONDS) -> dict:
    return wait_until(
        f"Parameter {namespace}/{name} {description}",
        lambda: get_parameter_resource(namespace, name),
        lambda obj: obj is not None and bool(done(obj)),
        timeout,
    )


def wait_for_parameter_ready(namespace: str, name: str, version: int | None = None,
                             timeout: float = READY_TIMEOUT_SECONDS) -> dict:
    """Waits until the Parameter is Ready for its generation (at `version`, when given)."""
    return wait_for_parameter(
        namespace, name,
        "is Ready for its generation" + (f" at version {version}" if version is not None else ""),
        lambda obj: is_parameter_ready(obj) and (version is None or obj["status"]["version"] == version),
        timeout,
    )


def wait_for_parameter_gone(namespace: str, name: str, timeout: float = RECONCILE_TIMEOUT_SECONDS) -> None:
    wait_until(f"Parameter {namespace}/{name} no longer exists",
               lambda: get_parameter_resource(namespace, name), lambda obj: obj is None, timeout)


def parameter_role(name: str, verbs: list[str], resource_names: list[str] | None = None) -> dict:
    rule: dict = {"apiGroups": ["coffer.dev"], "resources": ["parameters"], "verbs": verbs}
    if resource_names is not None:
        rule["resourceNames"] = resource_names
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name},
            "rules": [rule]}


def bind_parameter_role(namespace: str, account: str, verbs: list[str],
                        resource_names: list[str] | None = None) -> None:
    """A ServiceAccount `account` of `namespace` with a Role of its own name granting `verbs` on
    parameters.coffer.dev (only `resource_names`, when given)."""
    items = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
             parameter_role(account, verbs, resource_names), role_binding(account, account, [(namespace, account)])]
    kubectl("apply", "-n", namespace, "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


# ServiceAccounts of a Parameters namespace and their verbs on parameters.coffer.dev (None: no
# Role). ps-admin may also do anything with kmskeys.coffer.dev.
PARAMETERS_SERVICE_ACCOUNTS: dict[str, list[str] | None] = {
    "ps-admin": ["*"],
    "ps-reader": ["get"],
    "ps-nobody": None,
}


def make_parameters_namespace(name: str) -> None:
    """A namespace of the suite whose ps-admin may do anything with parameters.coffer.dev (and
    kmskeys), ps-reader only `get`, and ps-nobody nothing; waited for until `kubectl auth can-i`
    agrees."""
    make_namespace(name, with_service_accounts=False)
    items: list[dict] = []
    for account, verbs in PARAMETERS_SERVICE_ACCOUNTS.items():
        items.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}})
        if verbs is None:
            continue
        role = parameter_role(account, verbs)
        if account == "ps-admin":
            role["rules"].append({"apiGroups": ["coffer.dev"], "resources": ["kmskeys"], "verbs": ["*"]})
        items += [role, role_binding(account, account, [(name, account)])]
    kubectl("apply", "-n", name, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    wait_until(
        f"the RoleBindings of {name} are in effect (kubectl auth can-i)",
        lambda: [can_i(name, "ps-admin", "update", f"{PARAMETER_RESOURCE}/any"),
                 can_i(name, "ps-reader", "get", f"{PARAMETER_RESOURCE}/any")],
        all,
    )


# --------------------------------------------------------------------------------------------
# Test values, and looking for them where they must not be
# --------------------------------------------------------------------------------------------


@dataclass
class Plaintexts:
    """Every value the Secrets tests put into Coffer or read out of it, and every SecureString
    value of the Parameters tests, for the scan at the end of the session (etcd and the
    controller's log must hold none of them). String parameter values are configuration, which
    the resource shows by design: they are never registered."""

    values: list[bytes] = field(default_factory=list)

    def new(self) -> str:
        """A fresh recognisable value (`e2e-plain-<32 hex digits>`), registered."""
        value = f"{PLAINTEXT_MARKER}{uuid.uuid4().hex}"
        self.add(value)
        return value

    def add(self, value: str | bytes) -> None:
        data = value.encode() if isinstance(value, str) else bytes(value)
        assert len(data) >= 8, f"a value of {len(data)} bytes is too short to look for"
        if data not in self.values:
            self.values.append(data)


def encodings(value: bytes) -> dict[str, bytes]:
    """The forms under which a value could sit in stored or logged text: raw, JSON-escaped,
    hex, and base64 at each of the three alignments it can have inside a longer encoded blob
    (the characters that depend on the value's bytes alone)."""
    forms: dict[str, bytes] = {"raw": value, "hex": value.hex().encode()}
    try:
        escaped = json.dumps(value.decode("utf-8"))[1:-1].encode()
        if escaped != value:
            forms["JSON-escaped"] = escaped
    except UnicodeDecodeError:
        pass
    forms["base64"] = base64.b64encode(value)
    for offset in (0, 1, 2):
        encoded = base64.b64encode(b"\0" * offset + value)
        start = 4 if offset else 0  # a first group mixing the value with what precedes it
        end = 4 * ((offset + len(value)) // 3)  # groups made of the value's bytes only
        if end - start >= 16 and encoded[start:end] != forms["base64"]:
            forms[f"base64 (offset {offset})"] = encoded[start:end]
    return forms


def find_plaintexts(values: list[bytes], haystacks: dict[str, bytes]) -> list[str]:
    """Where any form of any value occurs: "<form> of value #N in <where>" (values are named by
    their index, so that a report does not repeat them)."""
    found: list[str] = []
    for index, value in enumerate(values):
        for form, needle in encodings(value).items():
            for where, haystack in haystacks.items():
                if needle in haystack:
                    found.append(f"{form} of value #{index} ({value[:len(PLAINTEXT_MARKER)]!r}...) in {where}")
    return found


# Why a scan for plaintext could not look where it should; conftest repeats it under the summary.
SCAN_SKIPS: list[str] = []


def skip_scan(reason: str) -> None:
    """Skips a scan for plaintext loudly: to the real stderr at once, under pytest's summary
    again, and as a skip, which the strict plugin (COFFER_E2E_REQUIRE_CLUSTER=1) fails."""
    import sys

    SCAN_SKIPS.append(reason)
    sys.__stderr__.write(f"=== e2e/cluster: plaintext scan SKIPPED: {reason} ===\n")
    sys.__stderr__.flush()
    pytest.skip(f"plaintext scan not done: {reason}")


def etcd_endpoint() -> str | None:
    """The etcd client URL of the repo's own control plane (controlplane.py exports it as
    ETCDCTL_ENDPOINTS), or None when the cluster is someone else's."""
    endpoints = os.environ.get("ETCDCTL_ENDPOINTS", "").strip()
    return endpoints.split(",")[0] if endpoints else None


def etcdctl_binary() -> str | None:
    found = shutil.which("etcdctl")
    if found:
        return found
    assets = os.environ.get("COFFER_K8S_ASSETS")
    if assets and os.access(os.path.join(assets, "etcdctl"), os.X_OK):
        return os.path.join(assets, "etcdctl")
    return None


def etcd_dump(endpoint: str, prefix: str = "/registry/") -> dict[bytes, bytes]:
    """Every key under `prefix` with its current value, as stored: with etcdctl when there is
    one, else through etcd's v3 JSON gateway. Raises RuntimeError when etcd cannot be read."""
    range_end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    binary = etcdctl_binary()
    if binary:
        try:
            result = subprocess.run(
                [binary, "--command-timeout=60s", "get", "--prefix", prefix, "-w", "json"],
                capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
                # etcdctl refuses a flag that an ETCDCTL_* variable also sets: the endpoint goes
                # in the variable alone.
                env={**{k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")},
                     "ETCDCTL_ENDPOINTS": endpoint},
            )
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"etcdctl get --prefix {prefix} did not finish: {error}") from error
        if result.returncode != 0:
            raise RuntimeError(f"etcdctl get --prefix {prefix} exited with {result.returncode}: "
                               f"{result.stderr.decode(errors='replace')[-2000:]}")
        answer = json.loads(result.stdout)
    else:
        try:
            response = requests.post(
                f"{endpoint}/v3/kv/range",
                json={"key": b64(prefix.encode()), "range_end": b64(range_end.encode())},
                timeout=120,
            )
        except requests.RequestException as error:
            raise RuntimeError(f"etcd at {endpoint} did not answer: {error}") from error
        if response.status_code != 200:
            raise RuntimeError(f"etcd range {prefix} answered HTTP {response.status_code}: {response.text[:500]}")
        answer = response.json()
    kvs = answer.get("kvs") or []
    count = int(answer.get("count", len(kvs)))
    if count != len(kvs) or answer.get("more"):
        raise RuntimeError(f"etcd returned {len(kvs)} of {count} keys under {prefix}")
    return {base64.b64decode(kv["key"]): base64.b64decode(kv.get("value", "")) for kv in kvs}
