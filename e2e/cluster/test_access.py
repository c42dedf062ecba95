"""Who may do what: Kubernetes RBAC verbs on kmskeys.coffer.dev, service account tokens, the
container credentials endpoint, and boto3 / the AWS CLI configured the way a pod would be."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import time
from typing import Iterator

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from cluster_helpers import (
    APP_ALIAS,
    KEY_ID_LABEL,
    REGION,
    b64,
    unb64,
    can_i,
    clean_environment,
    create_token,
    error_code,
    kubectl,
    get_kmskey,
    is_ready,
    wait_for_kmskey,
)

NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=60)
SERVICE_ACCOUNTS = ["e2e-admin", "e2e-app", "e2e-decrypt", "e2e-nobody"]


def test_service_account_without_binding_is_denied(cluster, app_key_ready):
    assert not can_i(cluster.namespace, "e2e-nobody", "encrypt", "kmskeys.coffer.dev/app")
    cluster.api.error("Encrypt", {"KeyId": f"alias/{APP_ALIAS}", "Plaintext": b64(b"x")},
                      cluster.token("e2e-nobody"), "AccessDeniedException")


def test_decrypt_only_binding(cluster, app_key_ready):
    ciphertext = cluster.api.encrypt(f"alias/{APP_ALIAS}", b"for the decrypter", cluster.token("e2e-app"))
    token = cluster.token("e2e-decrypt")
    assert cluster.api.decrypt(ciphertext["CiphertextBlob"], token) == b"for the decrypter"
    cluster.api.error("Encrypt", {"KeyId": f"alias/{APP_ALIAS}", "Plaintext": b64(b"x")}, token,
                      "AccessDeniedException")


def test_invalid_token_is_refused(cluster, app_key_ready):
    response = cluster.api.call("DescribeKey", {"KeyId": f"alias/{APP_ALIAS}"}, "not-a-token")
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert error_code(response), response.text[:500]


def _operation_for(verb: str, cluster) -> tuple[str, dict]:
    """One API call on KmsKey `app` that needs exactly `verb`."""
    alias = f"alias/{APP_ALIAS}"
    if verb in ("decrypt", "reencrypt"):
        blob = cluster.api.encrypt(alias, b"can-i", cluster.admin)["CiphertextBlob"]
        if verb == "decrypt":
            return "Decrypt", {"CiphertextBlob": blob}
        return "ReEncrypt", {"CiphertextBlob": blob, "DestinationKeyId": alias}
    return {
        "encrypt": ("Encrypt", {"KeyId": alias, "Plaintext": b64(b"can-i")}),
        "generatedatakey": ("GenerateDataKey", {"KeyId": alias, "KeySpec": "AES_256"}),
        "describe": ("DescribeKey", {"KeyId": alias}),
        # EnableKey on an enabled key changes nothing, and is an `admin` operation.
        "admin": ("EnableKey", {"KeyId": alias}),
    }[verb]


@pytest.mark.parametrize("verb", ["encrypt", "decrypt", "generatedatakey", "reencrypt", "describe", "admin"])
@pytest.mark.parametrize("service_account", SERVICE_ACCOUNTS)
def test_kubectl_auth_can_i_agrees_with_the_api(cluster, app_key_ready, service_account, verb):
    expected = can_i(cluster.namespace, service_account, verb, "kmskeys.coffer.dev/app")
    operation, body = _operation_for(verb, cluster)
    response = cluster.api.call(operation, body, cluster.token(service_account))
    if response.status_code == 200:
        allowed = True
    elif error_code(response) == "AccessDeniedException":
        allowed = False
    else:
        pytest.fail(f"{operation} as {service_account}: HTTP {response.status_code} {response.text[:1000]}")
    assert allowed == expected, (
        f"kubectl auth can-i {verb} kmskeys.coffer.dev/app says {'yes' if expected else 'no'} for "
        f"{service_account}, but {operation} was {'allowed' if allowed else 'denied'}: {response.text[:500]}"
    )


def test_create_key_through_the_api_makes_a_kmskey(cluster, app_key_ready):
    namespace = cluster.namespace
    app_key_id = app_key_ready["status"]["keyId"]
    cluster.api.error("CreateKey", {"Description": "e2e: not allowed"}, cluster.token("e2e-app"),
                      "AccessDeniedException")
    assert can_i(namespace, "e2e-admin", "admin", "kmskeys.coffer.dev")
    meta = cluster.api.ok("CreateKey", {"Description": "e2e: created through the API"}, cluster.admin)["KeyMetadata"]
    key_id = meta["KeyId"]
    obj = wait_for_kmskey(
        namespace, key_id, f"exists with label {KEY_ID_LABEL}={key_id} and is Ready",
        lambda o: (o["metadata"].get("labels") or {}).get(KEY_ID_LABEL) == key_id and is_ready(o),
    )
    assert obj["status"]["keyId"] == key_id, obj["status"]
    assert get_kmskey(namespace, key_id) is not None

    listed: list[str] = []
    body: dict = {}
    while True:
        page = cluster.api.ok("ListKeys", body, cluster.admin)
        listed += [entry["KeyId"] for entry in page.get("Keys", [])]
        if not page.get("Truncated"):
            break
        body = {"Marker": page["NextMarker"]}
    assert {key_id, app_key_id} <= set(listed), listed
    assert cluster.api.describe(app_key_id, cluster.admin)["KeyId"] == app_key_id


# --------------------------------------------------------------------------------------------
# Container credentials
# --------------------------------------------------------------------------------------------


def test_credentials_endpoint(cluster, app_key_ready):
    url = cluster.controller.endpoint + "/v1/credentials"
    response = requests.get(url, headers={"Authorization": cluster.token("e2e-app")}, timeout=30)
    assert response.status_code == 200, (response.status_code, response.text[:1000])
    creds = response.json()
    for member in ("AccessKeyId", "SecretAccessKey", "Token", "Expiration"):
        assert creds.get(member), f"{member} missing: {sorted(creds)}"
    expires = dt.datetime.fromisoformat(creds["Expiration"].replace("Z", "+00:00"))
    assert expires > dt.datetime.now(dt.timezone.utc), creds["Expiration"]
    for headers in ({}, {"Authorization": "not-a-token"}):
        refused = requests.get(url, headers=headers, timeout=30)
        assert 400 <= refused.status_code < 500, (headers, refused.status_code, refused.text[:500])


def _credentials_of(cluster, service_account: str) -> dict:
    response = requests.get(cluster.controller.endpoint + "/v1/credentials",
                            headers={"Authorization": create_token(cluster.namespace, service_account)},
                            timeout=30)
    assert response.status_code == 200, (response.status_code, response.text[:1000])
    return response.json()


def _describe_with(cluster, credentials: dict) -> str:
    """The outcome of DescribeKey signed with these temporary credentials: "ok", or the error code.
    The account has no RBAC grant, so live credentials get AccessDeniedException."""
    kms = boto3.client("kms", endpoint_url=cluster.controller.endpoint, region_name=REGION,
                       aws_access_key_id=credentials["AccessKeyId"],
                       aws_secret_access_key=credentials["SecretAccessKey"],
                       aws_session_token=credentials["Token"], config=NO_RETRIES)
    try:
        kms.describe_key(KeyId=f"alias/{APP_ALIAS}")
        return "ok"
    except ClientError as err:
        return err.response["Error"]["Code"]


def test_credentials_die_with_their_service_account(cluster, app_key_ready):
    name = "e2e-ephemeral"
    kubectl("create", "serviceaccount", name, "-n", cluster.namespace)
    try:
        old = _credentials_of(cluster, name)
        assert _describe_with(cluster, old) == "AccessDeniedException"
        kubectl("delete", "serviceaccount", name, "-n", cluster.namespace, "--wait=true")
        kubectl("create", "serviceaccount", name, "-n", cluster.namespace)
        # The controller remembers a ServiceAccount's uid for a few seconds.
        deadline = time.monotonic() + 60
        outcome = _describe_with(cluster, old)
        while outcome != "UnrecognizedClientException" and time.monotonic() < deadline:
            time.sleep(1)
            outcome = _describe_with(cluster, old)
        assert outcome == "UnrecognizedClientException", outcome
        # The account re-created under the same name gets credentials of its own, which work.
        assert _describe_with(cluster, _credentials_of(cluster, name)) == "AccessDeniedException"
        assert _describe_with(cluster, old) == "UnrecognizedClientException"
    finally:
        kubectl("delete", "serviceaccount", name, "-n", cluster.namespace, "--ignore-not-found")


def test_a_token_for_another_audience_is_refused(cluster, app_key_ready):
    # Without --audience the token is the API server's own, not Coffer's.
    token = kubectl("create", "token", "e2e-app", "-n", cluster.namespace, "--duration", "1h").stdout.strip()
    response = cluster.api.call("DescribeKey", {"KeyId": f"alias/{APP_ALIAS}"}, token)
    assert response.status_code == 400, (response.status_code, response.text[:500])
    assert error_code(response) == "UnrecognizedClientException", response.text[:500]


@contextlib.contextmanager
def container_credentials_env(cluster, service_account: str, directory) -> Iterator[dict[str, str]]:
    """os.environ as a pod would have it: no AWS_* variable but the container credentials pair,
    and HOME pointing at an empty directory so that no ~/.aws file of this machine is read.

    Kept in place while the client is used, since botocore reads the token file again whenever
    it fetches credentials."""
    token_file = directory / f"{service_account}.token"
    token_file.write_text(cluster.token(service_account))  # no trailing newline
    env = clean_environment()
    env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = cluster.controller.endpoint + "/v1/credentials"
    env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = str(token_file)
    home = directory / "home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_boto3_with_container_credentials(cluster, app_key_ready, tmp_path):
    arn = app_key_ready["status"]["arn"]
    with container_credentials_env(cluster, "e2e-app", tmp_path):
        session = boto3.Session()
        kms = session.client("kms", endpoint_url=cluster.controller.endpoint, region_name=REGION,
                             config=NO_RETRIES)
        credentials = session.get_credentials()
        assert credentials is not None and credentials.method == "container-role", credentials
        out = kms.encrypt(KeyId=f"alias/{APP_ALIAS}", Plaintext=b"from boto3")
        assert out["KeyId"] == arn, out
        assert kms.decrypt(CiphertextBlob=out["CiphertextBlob"])["Plaintext"] == b"from boto3"
        assert kms.describe_key(KeyId=f"alias/{APP_ALIAS}")["KeyMetadata"]["Arn"] == arn
        with pytest.raises(ClientError) as denied:
            kms.rotate_key_on_demand(KeyId=f"alias/{APP_ALIAS}")
        assert denied.value.response["Error"]["Code"] == "AccessDeniedException", denied.value.response


def test_aws_cli_with_container_credentials(cluster, app_key_ready, tmp_path):
    aws = shutil.which("aws")
    if aws is None:
        pytest.fail("the aws CLI is not installed (pip install -r e2e/requirements.txt)", pytrace=False)
    plaintext = tmp_path / "plaintext"
    plaintext.write_bytes(b"from the AWS CLI")
    with container_credentials_env(cluster, "e2e-app", tmp_path) as env:
        common = ["--endpoint-url", cluster.controller.endpoint, "--region", REGION, "--output", "json"]
        encrypted = subprocess.run(
            [aws, "kms", "encrypt", "--key-id", f"alias/{APP_ALIAS}", "--plaintext", f"fileb://{plaintext}",
             *common],
            capture_output=True, text=True, timeout=120, env=env,
        )
        assert encrypted.returncode == 0, encrypted.stderr
        blob = tmp_path / "blob"
        blob.write_bytes(unb64(json.loads(encrypted.stdout)["CiphertextBlob"]))
        decrypted = subprocess.run(
            [aws, "kms", "decrypt", "--ciphertext-blob", f"fileb://{blob}", *common],
            capture_output=True, text=True, timeout=120, env=env,
        )
        assert decrypted.returncode == 0, decrypted.stderr
        assert json.loads(decrypted.stdout)["Plaintext"] == b64(b"from the AWS CLI")
