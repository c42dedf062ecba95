"""The Helm chart, for real: lint, template, and install into the cluster; every object the chart
renders is accepted; `coffer controller` runs with exactly the chart's ServiceAccount and RBAC
and reconciles a KmsKey; `coffer csi` watches with exactly the chart's node plugin account; the
key-material protection refuses deletions; a misspelt value is refused; uninstall removes what
install made. The TLS modes: the self-signed CA and certificate survive an upgrade untouched and
are issued again near expiry; cert-manager mode renders its Issuers and Certificates. The
injection webhook is accepted by the API server, reaches only labelled pods and refuses them
while no controller answers. The NetworkPolicy installs; the ServiceMonitor renders.

These tests start a controller of their own, so conftest runs them before the session's."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from cluster_helpers import (
    REPO_ROOT,
    Controller,
    coffer_binary,
    companion_name,
    delete_namespace,
    get_secret,
    is_ready,
    kubectl_json,
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


# --------------------------------------------------------------------------------------------
# TLS, the injection webhook, NetworkPolicy, ServiceMonitor, PodDisruptionBudget
# --------------------------------------------------------------------------------------------

SERVICE_NAMES = ("coffer", "coffer.{ns}", "coffer.{ns}.svc", "coffer.{ns}.svc.cluster.local")
NOT_AFTER = "coffer.dev/not-after"


def render(helm: str, namespace: str, *args: str) -> dict[tuple[str, str], dict]:
    """`helm template coffer` of the chart, its objects by (kind, name)."""
    text = run_helm(helm, "template", "coffer", str(CHART), "-n", namespace, *args).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(text) if d}


def pem_certificate(data: str | bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data.encode() if isinstance(data, str) else data)


def secret_certificate(secret: dict, key: str = "tls.crt") -> x509.Certificate:
    return pem_certificate(base64.b64decode(secret["data"][key]))


def is_ca(certificate: x509.Certificate) -> bool:
    return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def dns_names(certificate: x509.Certificate) -> set[str]:
    return set(certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
               .value.get_values_for_type(x509.DNSName))


def test_lint_is_clean_in_every_mode(helm):
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
    for args in (["--set", "tls.mode=certManager"],
                 ["--set", "tls.mode=existing", "--set", f"tls.caBundle={ca}"],
                 ["--set", "tls.mode=existing", "--set", "injection.enabled=false"],
                 ["--set", "networkPolicy.enabled=true", "--set", "metrics.serviceMonitor.enabled=true",
                  "--set", "replicaCount=1", "--set", "csi.enabled=false"]):
        out = run_helm(helm, "lint", "--strict", str(CHART), *args)
        assert "0 chart(s) failed" in out.stdout, (args, out.stdout)


def test_self_signed_is_the_default_without_cert_manager(helm):
    namespace = "coffer-render"
    objects = render(helm, namespace)
    assert ("Secret", "coffer-tls") in objects and ("Secret", "coffer-ca") in objects
    assert not [key for key in objects if key[0] in ("Issuer", "Certificate")]
    ca = secret_certificate(objects[("Secret", "coffer-ca")])
    serving = secret_certificate(objects[("Secret", "coffer-tls")])
    assert is_ca(ca) and not is_ca(serving)
    serving.verify_directly_issued_by(ca)
    assert dns_names(serving) == {name.format(ns=namespace) for name in SERVICE_NAMES}
    assert ExtendedKeyUsageOID.SERVER_AUTH in serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    # One CA everywhere: the serving Secret's ca.crt, the ConfigMap, the webhook's caBundle.
    ca_pem = base64.b64decode(objects[("Secret", "coffer-ca")]["data"]["tls.crt"]).decode().strip()
    assert base64.b64decode(objects[("Secret", "coffer-tls")]["data"]["ca.crt"]).decode().strip() == ca_pem
    assert objects[("ConfigMap", "coffer-ca")]["data"]["ca.crt"].strip() == ca_pem
    webhook = objects[("MutatingWebhookConfiguration", "coffer-inject")]
    assert base64.b64decode(webhook["webhooks"][0]["clientConfig"]["caBundle"]).decode().strip() == ca_pem
    # No key in any ConfigMap.
    for (kind, _), obj in objects.items():
        if kind == "ConfigMap":
            assert "PRIVATE KEY" not in json.dumps(obj)
    # The CSI plugin trusts that CA by default.
    daemonset = objects[("DaemonSet", "coffer-csi-node")]["spec"]["template"]["spec"]
    assert {"name": "api-ca", "configMap": {"name": "coffer-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}} \
        in daemonset["volumes"]
    assert "--api-ca-file" in daemonset["containers"][0]["args"]


def test_cert_manager_mode_renders_issuers_and_certificates(helm):
    namespace = "coffer-render"
    for args in (["--api-versions", "cert-manager.io/v1"], ["--set", "tls.mode=certManager"]):
        objects = render(helm, namespace, *args)
        assert objects[("Issuer", "coffer-selfsigned")]["spec"] == {"selfSigned": {}}
        ca = objects[("Certificate", "coffer-ca")]["spec"]
        assert ca["isCA"] is True and ca["secretName"] == "coffer-ca"
        assert ca["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": "coffer-selfsigned"}
        assert objects[("Issuer", "coffer-ca")]["spec"] == {"ca": {"secretName": "coffer-ca"}}
        serving = objects[("Certificate", "coffer-tls")]["spec"]
        assert serving["secretName"] == "coffer-tls"
        assert set(serving["dnsNames"]) == {name.format(ns=namespace) for name in SERVICE_NAMES}
        assert serving["renewBefore"] == "720h" and serving["duration"] == "2160h"
        assert serving["issuerRef"]["name"] == "coffer-ca" and serving["issuerRef"]["kind"] == "Issuer"
        webhook = objects[("MutatingWebhookConfiguration", "coffer-inject")]
        assert webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{namespace}/coffer-tls"
        assert "caBundle" not in webhook["webhooks"][0]["clientConfig"]
        # The chart makes no certificate of its own, and the CSI plugin reads only ca.crt of
        # cert-manager's Secret.
        assert not [key for key in objects if key[0] == "Secret"]
        assert ("ConfigMap", "coffer-ca") not in objects
        volumes = objects[("DaemonSet", "coffer-csi-node")]["spec"]["template"]["spec"]["volumes"]
        assert {"name": "api-ca", "secret": {"secretName": "coffer-tls",
                                             "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in volumes
    # Asked for explicitly, self-signed wins over an available cert-manager.
    objects = render(helm, namespace, "--api-versions", "cert-manager.io/v1", "--set", "tls.mode=selfSigned")
    assert ("Secret", "coffer-tls") in objects and ("Certificate", "coffer-tls") not in objects


def test_existing_mode_takes_the_users_ca(helm):
    namespace = "coffer-render"
    out = run_helm(helm, "template", "coffer", str(CHART), "-n", namespace, "--set", "tls.mode=existing", check=False)
    assert out.returncode != 0 and "tls.caBundle" in out.stderr, out.stderr
    ca_pem = secret_certificate(render(helm, namespace)[("Secret", "coffer-ca")]).public_bytes(Encoding.PEM)
    bundle = base64.b64encode(ca_pem).decode()
    objects = render(helm, namespace, "--set", "tls.mode=existing", "--set", f"tls.caBundle={bundle}")
    assert not [key for key in objects if key[0] in ("Secret", "Issuer", "Certificate")]
    assert objects[("MutatingWebhookConfiguration", "coffer-inject")]["webhooks"][0]["clientConfig"]["caBundle"] == bundle
    assert objects[("ConfigMap", "coffer-ca")]["data"]["ca.crt"].strip() == ca_pem.decode().strip()
    # Without a webhook and a CA, nothing asks for one: the plugin uses the system's CAs.
    objects = render(helm, namespace, "--set", "tls.mode=existing", "--set", "injection.enabled=false")
    assert ("MutatingWebhookConfiguration", "coffer-inject") not in objects
    assert "--api-ca-file" not in objects[("DaemonSet", "coffer-csi-node")]["spec"]["template"]["spec"][
        "containers"][0]["args"]


def test_network_policy_service_monitor_and_budget_render_when_asked(helm):
    namespace = "coffer-render"
    defaults = render(helm, namespace)
    assert ("NetworkPolicy", "coffer") not in defaults and ("ServiceMonitor", "coffer") not in defaults
    assert defaults[("PodDisruptionBudget", "coffer")]["spec"]["maxUnavailable"] == 1
    assert ("PodDisruptionBudget", "coffer") not in render(helm, namespace, "--set", "replicaCount=1")
    assert render(helm, namespace, "--set", "podDisruptionBudget.minAvailable=1")[
        ("PodDisruptionBudget", "coffer")]["spec"].get("maxUnavailable") is None

    objects = render(helm, namespace, "--set", "networkPolicy.enabled=true",
                     "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.interval=15s",
                     "--set", "metrics.serviceMonitor.labels.release=prometheus",
                     "--set", "networkPolicy.metricsPeers[0].namespaceSelector.matchLabels.name=monitoring")
    policy = objects[("NetworkPolicy", "coffer")]["spec"]
    assert policy["podSelector"]["matchLabels"] == objects[("Deployment", "coffer")]["spec"]["selector"]["matchLabels"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    api, metrics = policy["ingress"]
    assert api == {"ports": [{"port": "https", "protocol": "TCP"}]}, "8443 open to any source by default"
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    egress_ports = [port["port"] for rule in policy["egress"] for port in rule["ports"]]
    assert {443, 6443, 53} <= set(egress_ports)

    monitor = objects[("ServiceMonitor", "coffer")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "15s"}]
    service = objects[("Service", "coffer")]
    assert {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"} in service["spec"]["ports"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [namespace]}


def test_provider_mode_and_restart_on_change_render_as_asked(helm):
    namespace = "coffer-render"
    defaults = render(helm, namespace)
    assert ("DaemonSet", "coffer-csi-provider") not in defaults
    rules = defaults[("ClusterRole", "coffer-controller")]["rules"]
    assert {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"],
            "verbs": ["get", "list", "watch", "patch"]} in rules
    args = defaults[("Deployment", "coffer")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--restart-debounce-seconds") + 1] == "10"

    off = render(helm, namespace, "--set", "restartOnChange.enabled=false")
    assert not [rule for rule in off[("ClusterRole", "coffer-controller")]["rules"] if "apps" in rule["apiGroups"]]
    assert "--no-restart-on-change" in off[("Deployment", "coffer")]["spec"]["template"]["spec"]["containers"][0]["args"]

    objects = render(helm, namespace, "--set", "csiProvider.enabled=true")
    pod = objects[("DaemonSet", "coffer-csi-provider")]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["args"][:3] == ["csi-provider", "--socket", "/provider/coffer.sock"]
    assert container["args"][container["args"].index("--api-ca-file") + 1] == "/etc/coffer-ca/ca.crt"
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
    assert context["readOnlyRootFilesystem"] is True and "privileged" not in context
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["providers-dir"]["hostPath"]["path"] == "/etc/kubernetes/secrets-store-csi-providers"
    assert volumes["api-ca"]["configMap"]["name"] == "coffer-ca"


def test_the_controller_runs_locked_down(helm):
    objects = render(helm, "coffer-render")
    pod = objects[("Deployment", "coffer")]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert container["image"] == "ghcr.io/coffer-dev/coffer:" + yaml.safe_load((CHART / "Chart.yaml").read_text())[
        "appVersion"]
    plugin = objects[("DaemonSet", "coffer-csi-node")]["spec"]["template"]["spec"]["containers"][0]
    assert plugin["securityContext"]["privileged"] is True, "the node plugin mounts: it needs privileges"
    assert plugin["image"] == container["image"]


def tls_state(namespace: str) -> dict:
    """The chart's TLS objects as the cluster holds them."""
    serving = get_secret(namespace, "coffer-tls")
    ca = get_secret(namespace, "coffer-ca")
    config_map = kubectl_json("get", "configmap", "coffer-ca", "-n", namespace)
    webhook = kubectl_json("get", "mutatingwebhookconfiguration", "coffer-inject")
    return {
        "crt": serving["data"]["tls.crt"], "key": serving["data"]["tls.key"],
        "not_after": serving["metadata"]["annotations"][NOT_AFTER],
        "ca_crt": ca["data"]["tls.crt"], "ca_key": ca["data"]["tls.key"],
        "ca_not_after": ca["metadata"]["annotations"][NOT_AFTER],
        "config_map": config_map["data"]["ca.crt"],
        "ca_bundle": webhook["webhooks"][0]["clientConfig"]["caBundle"],
    }


def check_tls(namespace: str, state: dict) -> x509.Certificate:
    """The serving certificate names the Service and was signed by the CA that the webhook's
    caBundle, the ConfigMap and the CA Secret all hold (the bundles first, followed by the CA
    before the last renewal, if any); returns the serving certificate."""
    ca = pem_certificate(base64.b64decode(state["ca_crt"]))
    assert is_ca(ca)
    bundle = x509.load_pem_x509_certificates(base64.b64decode(state["ca_bundle"]))
    assert bundle[0] == ca and all(is_ca(certificate) for certificate in bundle)
    assert x509.load_pem_x509_certificates(state["config_map"].encode()) == bundle
    serving = pem_certificate(base64.b64decode(state["crt"]))
    assert serving.issuer == ca.subject
    serving.verify_directly_issued_by(ca)
    assert dns_names(serving) == {name.format(ns=namespace) for name in SERVICE_NAMES}
    # The annotation tells the truth about the expiry (to the minute: it is computed beside it).
    recorded = x509_time(state["not_after"])
    assert abs((serving.not_valid_after_utc - recorded).total_seconds()) < 120, (serving.not_valid_after_utc, recorded)
    assert abs((ca.not_valid_after_utc - x509_time(state["ca_not_after"])).total_seconds()) < 120
    return serving


def x509_time(text: str) -> datetime:
    """An RFC 3339 time of a coffer.dev/not-after annotation."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def pod_manifest(name: str, namespace: str, labels: dict[str, str]) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
    })


def test_tls_webhook_network_policy_upgrade_and_uninstall(helm):
    namespace = f"coffer-e2e-helm-{uuid.uuid4().hex[:8]}"
    apps = f"coffer-e2e-helm-app-{uuid.uuid4().hex[:8]}"
    release = "coffer"
    base_args = ["--set", "networkPolicy.enabled=true"]
    run_helm(helm, "install", release, str(CHART), "-n", namespace, "--create-namespace", *base_args)
    installed = rendered_objects(run_helm(helm, "get", "manifest", release, "-n", namespace).stdout)
    try:
        kinds = {kind for _, kind, _, _ in installed}
        assert {"MutatingWebhookConfiguration", "NetworkPolicy", "PodDisruptionBudget", "Secret",
                "ConfigMap"} <= kinds, kinds
        missing = [obj for obj in installed if not exists(obj[0], obj[1], obj[2], obj[3] or namespace)]
        assert not missing, f"installed but not in the cluster: {missing}"

        # The webhook as the API server stored it.
        webhook = kubectl_json("get", "mutatingwebhookconfiguration", "coffer-inject")["webhooks"]
        assert len(webhook) == 1
        hook = webhook[0]
        assert hook["name"] == "inject.coffer.dev"
        assert hook["objectSelector"] == {"matchLabels": {"coffer.dev/inject": "true"}}
        assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"] and hook["timeoutSeconds"] == 5
        assert hook["reinvocationPolicy"] == "Never"
        assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                  "resources": ["pods"], "scope": "Namespaced"}]
        assert hook["clientConfig"]["service"] == {"name": "coffer", "namespace": namespace, "port": 8443,
                                                   "path": "/admission/inject"}
        first = tls_state(namespace)
        serving = check_tls(namespace, first)
        # The certificates are objects of the release, not values: nothing of them is in the
        # values Helm keeps.
        values = run_helm(helm, "get", "values", release, "-n", namespace, "--all", "-o", "json").stdout
        assert "PRIVATE KEY" not in values and first["ca_key"] not in values and "__coffer" not in values
        policy = kubectl_json("get", "networkpolicy", "coffer", "-n", namespace)
        assert policy is not None and policy["spec"]["ingress"][0]["ports"][0]["port"] == "https"

        # Only labelled pods reach the webhook; with no controller answering, they are refused.
        make_namespace(apps, with_service_accounts=False)
        wait_until(f"the default ServiceAccount of {apps} exists",
                   lambda: kubectl("get", "serviceaccount", "default", "-n", apps, check=False).returncode,
                   lambda code: code == 0)
        kubectl("create", "-f", "-", input=pod_manifest("plain", apps, {"app": "plain"}))
        refused = kubectl("create", "-f", "-", input=pod_manifest("injected", apps, {"coffer.dev/inject": "true"}),
                          check=False)
        assert refused.returncode != 0, "a labelled pod was admitted although no webhook answered"
        assert "inject.coffer.dev" in refused.stderr, refused.stderr

        # An upgrade that changes another value keeps the certificates byte for byte.
        # Provider mode turned on by an upgrade: its DaemonSet is accepted, and the next upgrade
        # without it removes it.
        run_helm(helm, "upgrade", release, str(CHART), "-n", namespace, *base_args, "--set", "logFormat=text",
                 "--set", "csiProvider.enabled=true")
        deployment = kubectl_json("get", "deployment", release, "-n", namespace)
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "COFFER_LOG_FORMAT", "value": "text"} in env
        assert tls_state(namespace) == first, "helm upgrade issued new certificates without cause"
        assert exists("apps/v1", "DaemonSet", f"{release}-csi-provider", namespace)

        # Near expiry (renewBeforeDays beyond the validity), the upgrade issues a new serving
        # certificate from the same CA.
        run_helm(helm, "upgrade", release, str(CHART), "-n", namespace, *base_args, "--set", "logFormat=text",
                 "--set", "tls.selfSigned.renewBeforeDays=400")
        renewed = tls_state(namespace)
        assert renewed["crt"] != first["crt"] and renewed["key"] != first["key"]
        assert (renewed["ca_crt"], renewed["ca_key"], renewed["ca_bundle"]) == \
            (first["ca_crt"], first["ca_key"], first["ca_bundle"])
        reissued = check_tls(namespace, renewed)
        assert reissued.serial_number != serving.serial_number
        assert reissued.not_valid_after_utc >= serving.not_valid_after_utc

        # The CA near its expiry: a new CA, a new certificate from it, and the webhook and the
        # ConfigMap trust the new CA.
        run_helm(helm, "upgrade", release, str(CHART), "-n", namespace, *base_args, "--set", "logFormat=text",
                 "--set", "tls.selfSigned.caRenewBeforeDays=4000")
        rotated = tls_state(namespace)
        assert rotated["ca_crt"] != first["ca_crt"] and rotated["ca_key"] != first["ca_key"]
        assert rotated["crt"] != renewed["crt"]
        check_tls(namespace, rotated)
        # The old CA is still trusted beside the new one, until it expires: the controller serves
        # the old certificate until kubelet refreshes its Secret.
        old_ca = pem_certificate(base64.b64decode(first["ca_crt"]))
        assert x509.load_pem_x509_certificates(base64.b64decode(rotated["ca_bundle"]))[1:] == [old_ca]
        assert base64.b64decode(get_secret(namespace, "coffer-ca")["data"]["previous.crt"]) == \
            base64.b64decode(first["ca_crt"])
        assert len(x509.load_pem_x509_certificates(base64.b64decode(first["ca_bundle"]))) == 1

        # Back to the defaults: nothing is near expiry any more, so nothing changes.
        run_helm(helm, "upgrade", release, str(CHART), "-n", namespace, *base_args)
        assert tls_state(namespace) == rotated
        assert not exists("apps/v1", "DaemonSet", f"{release}-csi-provider", namespace)
    finally:
        kubectl("delete", "namespace", apps, "--ignore-not-found", "--wait=false", check=False)
        run_helm(helm, "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")

    left = [obj for obj in installed if exists(obj[0], obj[1], obj[2], obj[3] or namespace)]
    assert not left, f"still in the cluster after helm uninstall: {left}"
    assert get_secret(namespace, "coffer-tls") is None and get_secret(namespace, "coffer-ca") is None
    delete_namespace(namespace)
