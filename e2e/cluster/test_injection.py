"""Injection by annotation on the real control plane: kube-apiserver sends real AdmissionReviews
to `coffer controller`'s `/admission/inject` over HTTPS, configured as the chart configures it
(object selector on `coffer.dev/inject: "true"`, failurePolicy Fail). A pod that asks is
admitted with the CSI volume and its mounts; a pod that does not is left unchanged; a pod that
asks wrongly is refused with the reason."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import uuid
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cluster_helpers import Controller, coffer_binary, delete_namespace, kubectl, kubectl_json, make_namespace

LABEL = "coffer.dev/inject"


def certificate_pair(directory: Path) -> tuple[Path, Path, bytes]:
    """A CA, and a serving certificate for 127.0.0.1 signed by it: (cert file, key file, CA PEM)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coffer e2e webhook CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path, ca.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def injecting(cluster, tmp_path_factory):
    """A namespace whose pods reach a webhook served by a second `coffer controller` (a follower
    of the session's Lease, so it only serves) over HTTPS."""
    directory = tmp_path_factory.mktemp("inject")
    cert, key, ca = certificate_pair(directory)
    controller = Controller(coffer_binary(), cluster.system_namespace, directory / "controller.log",
                            extra_args=("--no-restart-on-change",), tls=(cert, key))
    namespace = f"coffer-e2e-inject-{uuid.uuid4().hex[:8]}"
    webhook_name = f"{namespace}-inject"
    make_namespace(namespace)
    controller.start()
    try:
        configuration = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": webhook_name},
            "webhooks": [{
                "name": "inject.coffer.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "timeoutSeconds": 5,
                "clientConfig": {"url": f"https://127.0.0.1:{controller.api_port}/admission/inject",
                                 "caBundle": base64.b64encode(ca).decode()},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "objectSelector": {"matchLabels": {LABEL: "true"}},
                # Other tests' pods never reach this webhook.
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            }],
        }
        kubectl("apply", "-f", "-", input=json.dumps(configuration))
        yield namespace, controller
    finally:
        kubectl("delete", "mutatingwebhookconfiguration", webhook_name, "--ignore-not-found", check=False)
        controller.stop()
        delete_namespace(namespace)


def pod(name: str, labels: dict, annotations: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "containers": [
                {"name": "app", "image": "registry.example/app:1"},
                {"name": "proxy", "image": "registry.example/proxy:1"},
            ],
        },
    }


def create(namespace: str, manifest: dict, check: bool = True):
    return kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=check)


def test_a_pod_that_asks_is_admitted_with_the_volume_and_mounts(injecting):
    namespace, controller = injecting
    create(namespace, pod("asks", {LABEL: "true"}, {
        "coffer.dev/inject-db": "secret/app-db#password",
        "coffer.dev/inject-url": "parameter//shop/web/url?mode=0400",
        "coffer.dev/inject-template-app.env": "URL={{resolve:ssm:/shop/web/url}}\n",
        "coffer.dev/injection-containers": "app",
    }))
    admitted = kubectl_json("get", "pod", "asks", "-n", namespace)
    volumes = {volume["name"]: volume for volume in admitted["spec"]["volumes"]}
    assert "coffer-inject" in volumes, admitted["spec"]["volumes"]
    csi = volumes["coffer-inject"]["csi"]
    assert csi["driver"] == "csi.coffer.dev" and csi["readOnly"] is True
    objects = yaml.safe_load(csi["volumeAttributes"]["objects"])
    assert objects == [
        {"kind": "secret", "name": "app-db", "file": "db", "property": "password"},
        {"kind": "parameter", "name": "/shop/web/url", "file": "url", "mode": "0400"},
    ]
    templates = yaml.safe_load(csi["volumeAttributes"]["templates"])
    assert templates == [{"file": "app.env", "template": "URL={{resolve:ssm:/shop/web/url}}\n"}]
    containers = {container["name"]: container for container in admitted["spec"]["containers"]}
    mounts = [m for m in containers["app"]["volumeMounts"] if m["name"] == "coffer-inject"]
    assert mounts == [{"name": "coffer-inject", "mountPath": "/run/coffer", "readOnly": True}], mounts
    assert not [m for m in containers["proxy"].get("volumeMounts", []) if m["name"] == "coffer-inject"]


def test_a_pod_that_does_not_ask_is_left_unchanged(injecting):
    namespace, _ = injecting
    # Annotated but not labelled: the object selector keeps it away from the webhook.
    create(namespace, pod("plain", {"app": "plain"}, {"coffer.dev/inject-db": "secret/app-db"}))
    admitted = kubectl_json("get", "pod", "plain", "-n", namespace)
    names = [volume["name"] for volume in admitted["spec"].get("volumes", [])]
    assert "coffer-inject" not in names, names
    for container in admitted["spec"]["containers"]:
        assert all(m["name"] != "coffer-inject" for m in container.get("volumeMounts", []))


def test_a_pod_that_asks_wrongly_is_refused_with_the_reason(injecting):
    namespace, _ = injecting
    result = create(namespace, pod("wrong", {LABEL: "true"}, {"coffer.dev/inject-db": "vault/app-db"}),
                    check=False)
    assert result.returncode != 0
    assert "inject.coffer.dev" in result.stderr and "coffer.dev/inject-db" in result.stderr, result.stderr
    assert kubectl("get", "pod", "wrong", "-n", namespace, check=False).returncode != 0
