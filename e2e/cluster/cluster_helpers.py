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
import time
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

    def __init__(self, binary: str, system_namespace: str, log_path: Path, kubeconfig: Path | None = None):
        self.binary = binary
        self.system_namespace = system_namespace
        self.log_path = log_path
        self.kubeconfig = kubeconfig
        self.api_port = free_port()
        self.probe_port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def probe_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.probe_port}"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--log-format",
            "json",
            "controller",
            "--insecure-http",
            "--listen",
            f"127.0.0.1:{self.api_port}",
            "--probe-listen",
            f"127.0.0.1:{self.probe_port}",
            "--namespace",
            self.system_namespace,
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
