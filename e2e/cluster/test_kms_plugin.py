"""`coffer kms-plugin` as kube-apiserver's KMS v2 provider, on a control plane of its own.

The suite's shared control plane is left alone: this module starts a second, small one (its own
state folder, etcd and ports) whose kube-apiserver reads an EncryptionConfiguration naming the
plugin's socket, and reads that etcd directly to see what kube-apiserver stored. Like the rest of
the suite, it is skipped (loudly, by conftest) when no control plane can be had.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from cluster_helpers import REPO_ROOT, coffer_binary, etcd_dump

sys.path.insert(0, str(REPO_ROOT / "e2e" / "controlplane"))
import controlplane  # noqa: E402

ETCD_PREFIX = b"k8s:enc:kms:v2:coffer:"
PLUGIN_START_SECONDS = 30
# COFFER_E2E_KMS_LONG_OUTAGE=1 keeps the plugin down until writes fail (about 3 minutes).
LONG_OUTAGE_ENV = "COFFER_E2E_KMS_LONG_OUTAGE"
LONG_OUTAGE_SECONDS = 300


class Plugin:
    """One `coffer kms-plugin` process on a data directory that outlives it."""

    def __init__(self, data_dir: Path, socket: Path, log: Path) -> None:
        self.data_dir, self.socket, self.log = data_dir, socket, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [coffer_binary(), "kms-plugin", "--socket", str(self.socket),
                 "--data-dir", str(self.data_dir)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + PLUGIN_START_SECONDS
        while not self.socket.is_socket():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"kms-plugin did not start:\n{self.log_tail()}", pytrace=False)
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
        self.process = None

    def hangup(self) -> None:
        assert self.process is not None and self.process.poll() is None
        self.process.send_signal(signal.SIGHUP)

    def rotate_offline(self) -> str:
        result = subprocess.run(
            [coffer_binary(), "kms-plugin", "rotate-key", "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        except FileNotFoundError:
            return "(no log)"


class EncryptedControlPlane:
    def __init__(self, state: Path, env: dict[str, str], plugin: Plugin) -> None:
        self.state, self.env, self.plugin = state, env, plugin
        self.kubectl_path = str(Path(env[controlplane.ASSETS_ENV]) / "kubectl")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [self.kubectl_path, "--kubeconfig", self.env["KUBECONFIG"], *args],
            input=input, capture_output=True, text=True, timeout=120,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr}\n"
                        f"--- kms-plugin ---\n{self.plugin.log_tail()}", pytrace=False)
        return result

    def stored(self, name: str) -> bytes:
        """The Secret `default/NAME` as etcd holds it."""
        key = f"/registry/secrets/default/{name}".encode()
        return etcd_dump(self.env["ETCDCTL_ENDPOINTS"], f"/registry/secrets/default/{name}").get(key, b"")

    def create_secret(self, name: str, value: str) -> None:
        self.kubectl("create", "secret", "generic", name, f"--from-literal=value={value}")

    def read_secret(self, name: str) -> str:
        encoded = self.kubectl("get", "secret", name, "-o", "jsonpath={.data.value}").stdout
        return base64.b64decode(encoded).decode()

    def restart_apiserver(self) -> None:
        controlplane.restart_apiserver(self.state)


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory) -> Iterator[EncryptedControlPlane]:
    try:
        bin_dir = Path(os.environ.get(controlplane.ASSETS_ENV) or controlplane.assets(allow_build=False))
    except (controlplane.ControlPlaneError, OSError) as error:
        # A cluster of someone else's, and no control plane binaries here to start one with.
        reason = f"no kube-apiserver binaries to start a control plane with ({error})"
        sys.__stderr__.write(f"=== e2e/cluster test_kms_plugin SKIPPED: {reason} ===\n")
        sys.__stderr__.flush()
        pytest.skip(reason)
    # Short paths: a socket path holds at most 96 bytes here.
    base = Path(tmp_path_factory.mktemp("kmsp"))
    plugin = Plugin(base / "plugin-data", base / "kms.sock", base / "kms-plugin.log")
    config = base / "encryption-config.yaml"
    template = (REPO_ROOT / "deploy" / "encryption-config.yaml").read_text()
    config.write_text(template.replace("unix:///var/run/coffer/kms-plugin.sock", f"unix://{plugin.socket}"))
    plugin.start()
    state = base / "controlplane"
    try:
        env = controlplane.up(state, bin_dir, ["--encryption-provider-config", str(config)])
    except controlplane.ControlPlaneError as error:
        plugin.stop()
        pytest.fail(f"the encrypted control plane did not start: {error}\n"
                    f"--- kms-plugin ---\n{plugin.log_tail()}", pytrace=False)
    try:
        yield EncryptedControlPlane(state, env, plugin)
    finally:
        controlplane.down(state)
        plugin.stop()


def key_id_in(stored: bytes) -> str:
    """The plugin key id kube-apiserver recorded beside the object (in the clear, by design)."""
    marker = stored.find(b"arn:aws:kms:")
    assert marker >= 0, stored[:200]
    end = marker
    while end < len(stored) and 0x21 <= stored[end] <= 0x7E:
        end += 1
    return stored[marker:end].decode()


def test_secrets_are_sealed_in_etcd_and_survive_rotation_and_restarts(encrypted: EncryptedControlPlane) -> None:
    first_value = f"kms-plugin-first-{uuid.uuid4().hex}"
    encrypted.create_secret("first", first_value)

    stored = encrypted.stored("first")
    print(f"etcd value of default/first begins {stored[:len(ETCD_PREFIX)]!r}")
    assert stored.startswith(ETCD_PREFIX), stored[:80]
    assert first_value.encode() not in stored
    assert base64.b64encode(first_value.encode()) not in stored
    first_key_id = key_id_in(stored)
    assert first_key_id.endswith(":v1"), first_key_id
    assert encrypted.read_secret("first") == first_value

    # An operator's rotation: stop the plugin, add a key version, start it again; kube-apiserver
    # restarted so that it takes the new key id at once rather than at its next Status poll.
    encrypted.plugin.stop()
    rotated = encrypted.plugin.rotate_offline()
    assert rotated.endswith(":v2"), rotated
    encrypted.plugin.start()
    encrypted.restart_apiserver()

    second_value = f"kms-plugin-second-{uuid.uuid4().hex}"
    encrypted.create_secret("second", second_value)
    second_stored = encrypted.stored("second")
    assert second_stored.startswith(ETCD_PREFIX)
    assert second_value.encode() not in second_stored
    assert key_id_in(second_stored) == rotated
    assert encrypted.read_secret("first") == first_value
    assert encrypted.read_secret("second") == second_value

    # A plugin restart loses nothing: a cold kube-apiserver after it must ask the plugin to
    # open both key versions' data keys again.
    encrypted.plugin.stop()
    encrypted.plugin.start()
    encrypted.restart_apiserver()
    assert encrypted.read_secret("first") == first_value
    assert encrypted.read_secret("second") == second_value

    # Rewriting every Secret re-encrypts it under the current key version.
    listing = encrypted.kubectl("get", "secrets", "-A", "-o", "json").stdout
    encrypted.kubectl("replace", "-f", "-", input=listing)
    assert key_id_in(encrypted.stored("first")) == rotated
    assert encrypted.read_secret("first") == first_value

    # A running plugin rotates on SIGHUP, without stopping.
    encrypted.plugin.hangup()
    third_key_id = rotated.removesuffix(":v2") + ":v3"
    deadline = time.monotonic() + 30
    while third_key_id not in encrypted.plugin.log_tail():
        assert time.monotonic() < deadline, encrypted.plugin.log_tail()
        time.sleep(0.1)
    encrypted.restart_apiserver()
    encrypted.create_secret("third", "third value")
    assert key_id_in(encrypted.stored("third")) == third_key_id
    assert encrypted.read_secret("first") == first_value
    assert encrypted.read_secret("second") == second_value


def test_plugin_down_keeps_reads_and_fails_new_writes_loudly(encrypted: EncryptedControlPlane) -> None:
    value = f"kms-plugin-down-{uuid.uuid4().hex}"
    encrypted.create_secret("before-outage", value)
    encrypted.plugin.stop()
    try:
        # Reads of stored Secrets go on: kube-apiserver keeps the data keys it opened.
        assert encrypted.read_secret("before-outage") == value
        # A write is attempted; what happens is reported for docs/kms-plugin.md.
        started = time.monotonic()
        result = encrypted.kubectl("create", "secret", "generic", "during-outage",
                                   "--from-literal=value=x", check=False)
        print(f"write with the plugin down: exit {result.returncode} after "
              f"{time.monotonic() - started:.1f}s: {result.stderr.strip() or result.stdout.strip()}")
        if os.environ.get(LONG_OUTAGE_ENV) == "1":
            wait_for_writes_to_fail(encrypted)
    finally:
        encrypted.plugin.start()
    # Back up: writes work again (kube-apiserver notices at its next Status poll).
    deadline = time.monotonic() + 90
    while encrypted.kubectl("create", "secret", "generic", "after-outage",
                            f"--from-literal=value={value}", check=False).returncode != 0:
        assert time.monotonic() < deadline, "writes did not resume after the plugin came back"
        time.sleep(2)
    assert encrypted.read_secret("after-outage") == value
    assert encrypted.read_secret("before-outage") == value


def wait_for_writes_to_fail(encrypted: EncryptedControlPlane) -> None:
    """With the plugin down, kube-apiserver seals writes with the seed it holds until that
    expires (3 minutes after its last good Status call); then writes fail, reads do not."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        result = encrypted.kubectl("create", "secret", "generic", f"outage-{attempt}",
                                   "--from-literal=value=x", check=False)
        if result.returncode != 0:
            break
        assert time.monotonic() - started < LONG_OUTAGE_SECONDS, "writes never failed with the plugin down"
        time.sleep(10)
    print(f"writes failed {time.monotonic() - started:.0f}s into the outage: {result.stderr.strip()}")
    assert "expired" in result.stderr, result.stderr
    assert encrypted.read_secret("before-outage")
