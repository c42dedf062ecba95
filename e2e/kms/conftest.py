"""Fixtures for the KMS end-to-end suite.

One `coffer server` runs for the whole session on a fresh data directory. Before it starts for
real, the fixture starts it once (so that the data directory, the root key and the admin
credentials exist), stops it, and adds a non-admin user `app` with `coffer admin
create-access-key`. A second server with a tiny throttle budget is started for the throttling
tests only.

Clients are configured the way a user would configure them: an AWS shared credentials file, an
AWS config file, a profile name and an endpoint URL. Nothing else.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from unittest import mock
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import boto3
import botocore.auth
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

REGION = "us-east-1"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = REPO_ROOT / "target" / "debug" / "coffer"
START_TIMEOUT_SECONDS = 30
LISTENING_MESSAGE = "coffer server listening"

# No retries anywhere: a throttled call or a 5xx must surface in the test that caused it instead
# of being retried away. `total_max_attempts` counts the first attempt, so 1 means "send once".
NO_RETRIES = {"total_max_attempts": 1, "mode": "standard"}

# Key generation for RSA 4096 can be slow on a debug build, so reads get a generous timeout.
CLIENT_CONFIG = Config(retries=NO_RETRIES, read_timeout=180, connect_timeout=10)

# The same, with botocore's client-side parameter checks turned off, so that out-of-range
# values (RotationPeriodInDays=89, empty Plaintext, ...) reach the server and the server's own
# validation is what the test observes.
UNVALIDATED_CONFIG = CLIENT_CONFIG.merge(Config(parameter_validation=False))

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"


# --------------------------------------------------------------------------------------------
# Process handling
# --------------------------------------------------------------------------------------------


def coffer_binary() -> str:
    """The server binary: $COFFER_BIN, else target/debug/coffer in the repository."""
    path = os.environ.get("COFFER_BIN") or str(DEFAULT_BINARY)
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.fail(
            f"coffer binary not found at {path}: build it (cargo build --bin coffer) "
            "or set COFFER_BIN",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment_of(environ: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in environ.items() if not name.startswith("AWS_")}


def clean_environment() -> dict[str, str]:
    """The test process's environment without any AWS_* variable, so that nothing the machine
    happens to have set (a region, static keys, an endpoint) changes what the clients do."""
    return clean_environment_of(dict(os.environ))


class CofferServer:
    """One `coffer server` process on a data directory."""

    def __init__(self, binary: str, data_dir: Path, log_path: Path, extra_args: tuple[str, ...] = ()):
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra_args = extra_args
        self.process: subprocess.Popen[str] | None = None
        self.endpoint: str | None = None
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None
        self._lines: list[str] = []

    def start(self) -> str:
        port = free_port()
        command = [
            self.binary,
            "--log-format",
            "json",
            "server",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{port}",
            *self.extra_args,
        ]
        self._listening.clear()
        self._lines = []
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_environment(),
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._listening.wait(0.1):
                break
            if self.process.poll() is not None:
                self._reader.join(timeout=5)
                raise RuntimeError(
                    f"coffer server exited with {self.process.returncode} before listening:\n"
                    + self.log_text()
                )
        else:
            self.stop()
            raise RuntimeError(
                f"coffer server did not log '{LISTENING_MESSAGE}' within "
                f"{START_TIMEOUT_SECONDS}s:\n" + self.log_text()
            )
        assert self.endpoint == f"http://127.0.0.1:{port}", self.endpoint
        health = requests.get(f"{self.endpoint}/healthz", timeout=10)
        assert health.status_code == 200, health.text
        return self.endpoint

    def _read_log(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in self.process.stderr:
                self._lines.append(line)
                log.write(line)
                log.flush()
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                fields = entry.get("fields", {}) if isinstance(entry, dict) else {}
                if fields.get("message") == LISTENING_MESSAGE:
                    self.endpoint = fields.get("address")
                    self._listening.set()

    def log_text(self) -> str:
        return "".join(self._lines[-200:])

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)


def create_access_key(binary: str, data_dir: Path, user: str, profile: str) -> str:
    """`coffer admin create-access-key` for a non-admin user; returns the credentials section."""
    result = subprocess.run(
        [
            binary,
            "admin",
            "create-access-key",
            "--data-dir",
            str(data_dir),
            "--user",
            user,
            "--profile",
            profile,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_environment(),
    )
    assert result.returncode == 0, result.stderr
    assert f"[{profile}]" in result.stdout, result.stdout
    assert "aws_access_key_id" in result.stdout and "aws_secret_access_key" in result.stdout
    return result.stdout


def parse_profiles(text: str) -> dict[str, dict[str, str]]:
    """A tiny INI reader for credentials files (section -> key -> value)."""
    profiles: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = profiles.setdefault(line[1:-1].strip(), {})
        elif "=" in line and current is not None:
            key, value = line.split("=", 1)
            current[key.strip()] = value.strip()
    return profiles


# --------------------------------------------------------------------------------------------
# Connection info handed to the tests
# --------------------------------------------------------------------------------------------


@dataclass
class CliResult:
    code: int
    data: Any
    stdout: str
    stderr: str


@dataclass
class Coffer:
    """A running server and everything a client needs to reach it."""

    server: CofferServer
    endpoint: str
    data_dir: Path
    credentials_file: Path
    config_file: Path
    admin_profile: str = "coffer"
    app_profile: str = "app"
    _clients: dict[tuple[str, bool], Any] = field(default_factory=dict)

    def restart(self) -> None:
        """Stops the server with SIGTERM and starts it again on the same data directory."""
        self.server.stop()
        self.endpoint = self.server.start()
        self._clients.clear()

    @property
    def audit_log(self) -> Path:
        return self.data_dir / "audit.log"

    def env(self, profile: str | None = None) -> dict[str, str]:
        """Environment for an AWS client process: the three AWS_* variables and nothing else."""
        env = clean_environment()
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(self.credentials_file)
        env["AWS_CONFIG_FILE"] = str(self.config_file)
        env["AWS_PROFILE"] = profile or self.admin_profile
        return env

    def client(self, profile: str | None = None, *, validate: bool = True, config: Config | None = None,
               service: str = "kms"):
        """A boto3 client of `service` for `profile`, configured through the credentials and config
        files."""
        profile = profile or self.admin_profile
        cacheable = config is None
        cache_key = (profile, validate, service)
        if cacheable and cache_key in self._clients:
            return self._clients[cache_key]
        base = CLIENT_CONFIG if validate else UNVALIDATED_CONFIG
        if config is not None:
            base = base.merge(config)
        client = make_client(self.credentials_file, self.config_file, profile, self.endpoint, base, service)
        if cacheable:
            self._clients[cache_key] = client
        return client

    def cli(self, *args: str, profile: str | None = None, output: str = "json", timeout: float = 180) -> CliResult:
        """Runs `aws ARGS --endpoint-url ... --output OUTPUT`; returns (exit code, parsed stdout, stderr)."""
        aws = shutil.which("aws")
        if aws is None:
            pytest.fail("the aws CLI is not installed (pip install -r e2e/requirements.txt)", pytrace=False)
        command = [aws, *args, "--endpoint-url", self.endpoint, "--output", output]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=self.env(profile)
        )
        data: Any = None
        if output == "json" and result.stdout.strip():
            data = json.loads(result.stdout)
        return CliResult(result.returncode, data, result.stdout, result.stderr)

    def shell(self, script: str, profile: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
        """Runs a bash pipeline (for `aws ... | base64 -d`) with ENDPOINT set and the client env."""
        env = self.env(profile)
        env["ENDPOINT"] = self.endpoint
        return subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + script],
            capture_output=True,
            timeout=timeout,
            env=env,
        )

    def signed_post(
        self,
        target: str,
        body: Any = None,
        profile: str | None = None,
        *,
        raw_body: bytes | None = None,
        send_body: bytes | None = None,
        service: str = "kms",
        signed_at: dt.datetime | None = None,
    ) -> requests.Response:
        """A hand-made request signed with botocore's SigV4 signer and sent with requests.

        `raw_body` replaces the JSON encoding of `body`; `send_body` sends other bytes than the
        ones that were signed; `service` is the service name in the signature's scope;
        `signed_at` (naive UTC) replaces the signing time."""
        creds = parse_profiles(self.credentials_file.read_text())[profile or self.admin_profile]
        payload = raw_body if raw_body is not None else json.dumps(body if body is not None else {}).encode()
        request = AWSRequest(
            method="POST",
            url=self.endpoint + "/",
            data=payload,
            headers={"Content-Type": JSON_CONTENT_TYPE, "X-Amz-Target": target},
        )
        credentials = Credentials(creds["aws_access_key_id"], creds["aws_secret_access_key"])
        signer = SigV4Auth(credentials, service, REGION)
        if signed_at is None:
            signer.add_auth(request)
        else:
            with mock.patch.object(botocore.auth, "get_current_datetime", return_value=signed_at):
                signer.add_auth(request)
        prepared = request.prepare()
        return requests.post(
            prepared.url,
            data=payload if send_body is None else send_body,
            headers=dict(prepared.headers),
            timeout=60,
        )


@contextlib.contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(clean_environment_of(saved))
        os.environ.update(values)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def make_client(credentials_file: Path, config_file: Path, profile: str, endpoint: str, config: Config,
                service: str = "kms"):
    """boto3 resolves credentials and region while the client is created, so the files are named
    through the standard variables just for that moment."""
    with patched_environ(
        {"AWS_SHARED_CREDENTIALS_FILE": str(credentials_file), "AWS_CONFIG_FILE": str(config_file)}
    ):
        session = boto3.Session(profile_name=profile)
        client = session.client(service, endpoint_url=endpoint, config=config)
    assert client.meta.region_name == REGION, client.meta.region_name
    return client


def write_client_files(directory: Path, server_credentials: str, extra_sections: str) -> tuple[Path, Path]:
    """A credentials file with the server's admin profile, the extra users, and two broken
    profiles (a wrong secret for the admin key, an access key id the server never issued)."""
    directory.mkdir(parents=True, exist_ok=True)
    admin = parse_profiles(server_credentials)["coffer"]
    bad_secret = base64.b64encode(os.urandom(30)).decode()
    text = (
        server_credentials.rstrip("\n")
        + "\n\n"
        + extra_sections.rstrip("\n")
        + "\n\n[coffer-bad-secret]\n"
        + f"aws_access_key_id = {admin['aws_access_key_id']}\n"
        + f"aws_secret_access_key = {bad_secret}\n"
        + "\n[coffer-unknown-key]\n"
        + "aws_access_key_id = AKIA" + uuid.uuid4().hex[:16].upper() + "\n"
        + f"aws_secret_access_key = {bad_secret}\n"
    )
    credentials = directory / "credentials"
    credentials.write_text(text)
    credentials.chmod(0o600)
    config = directory / "config"
    config.write_text(
        "".join(
            f"[profile {name}]\nregion = {REGION}\n\n"
            for name in ("coffer", "app", "coffer-bad-secret", "coffer-unknown-key")
        )
    )
    return credentials, config


def start_coffer(base: Path, extra_args: tuple[str, ...] = (), users: tuple[str, ...] = ()) -> Coffer:
    """First start (creates the data directory), stop, add users, start again."""
    binary = coffer_binary()
    data_dir = base / "data"
    first = CofferServer(binary, data_dir, base / "server-first-start.log", extra_args)
    first.start()
    first.stop()
    sections = "\n".join(create_access_key(binary, data_dir, user, user) for user in users)
    server = CofferServer(binary, data_dir, base / "server.log", extra_args)
    endpoint = server.start()
    try:
        server_credentials = (data_dir / "credentials").read_text()
        assert "[coffer]" in server_credentials
        assert "region = us-east-1" in (data_dir / "config").read_text()
        credentials, config = write_client_files(base / "client", server_credentials, sections)
    except BaseException:
        server.stop()
        raise
    return Coffer(
        server=server,
        endpoint=endpoint,
        data_dir=data_dir,
        credentials_file=credentials,
        config_file=config,
    )


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def coffer(tmp_path_factory) -> Iterator[Coffer]:
    base = tmp_path_factory.mktemp("coffer")
    instance = start_coffer(base, users=("app",))
    try:
        yield instance
    finally:
        instance.server.stop()


@pytest.fixture(scope="module")
def throttled_coffer(tmp_path_factory) -> Iterator[Coffer]:
    base = tmp_path_factory.mktemp("coffer-throttled")
    instance = start_coffer(base, extra_args=("--throttle-rps", "2", "--throttle-burst", "2"))
    try:
        yield instance
    finally:
        instance.server.stop()


@pytest.fixture(scope="session")
def kms(coffer):
    """boto3 KMS client with the admin profile."""
    return coffer.client()


@pytest.fixture(scope="session")
def kms_unvalidated(coffer):
    """Admin client that sends out-of-range parameters to the server unchecked."""
    return coffer.client(validate=False)


@pytest.fixture(scope="session")
def app_kms(coffer):
    """boto3 KMS client for the non-admin user `app`."""
    return coffer.client("app")


@pytest.fixture(scope="session")
def account_id(kms) -> str:
    key_id = kms.create_key(Description="e2e: account probe")["KeyMetadata"]["KeyId"]
    account = kms.describe_key(KeyId=key_id)["KeyMetadata"]["AWSAccountId"]
    assert len(account) == 12 and account.isdigit(), account
    return account


# --------------------------------------------------------------------------------------------
# Assertion helpers (imported by the test modules)
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def kms_error(code: str, status: int = 400) -> Iterator[Any]:
    """Expects a ClientError with AWS error code `code`, HTTP status `status`, a request id and
    an x-amzn-ErrorType header naming the code."""
    with pytest.raises(ClientError) as info:
        yield info
    assert_error_response(info.value.response, code, status)


def assert_error_response(response: dict, code: str, status: int = 400) -> None:
    error = response.get("Error", {})
    assert error.get("Code") == code, f"expected {code}, got {error}"
    meta = response["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == status, f"{code}: expected HTTP {status}, got {meta['HTTPStatusCode']}"
    headers = meta.get("HTTPHeaders", {})
    assert headers.get("x-amzn-requestid"), f"{code}: no x-amzn-RequestId header: {headers}"
    assert headers.get("x-amzn-errortype", "").split(":")[0] == code, (
        f"{code}: x-amzn-ErrorType header is {headers.get('x-amzn-errortype')!r}"
    )


def assert_ok(response: dict) -> dict:
    """A successful boto3 response carries the x-amzn-RequestId header and a 200."""
    meta = response["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == 200
    assert meta.get("RequestId"), meta
    assert meta["HTTPHeaders"].get("x-amzn-requestid") == meta["RequestId"]
    assert "x-amzn-errortype" not in meta["HTTPHeaders"]
    return response


def new_symmetric_key(kms, description: str = "e2e", **kwargs) -> str:
    return kms.create_key(Description=description, **kwargs)["KeyMetadata"]["KeyId"]


def key_arn(account: str, key_id: str) -> str:
    return f"arn:aws:kms:{REGION}:{account}:key/{key_id}"


def alias_arn(account: str, alias_name: str) -> str:
    return f"arn:aws:kms:{REGION}:{account}:{alias_name}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
