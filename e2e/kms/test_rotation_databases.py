"""Rotation against real PostgreSQL and MariaDB servers (started by `e2e/databases.sh start`),
through a real `coffer server` and boto3: single-user and alternating-users rotations, a reader
that polls GetSecretValue throughout, and the crash test (kill -9 inside each step, restart,
and the rotation completes with a CURRENT that decrypts and logs in).

The servers' connection details come from the environment, or from the file
`e2e/databases.sh` writes. Without them these tests skip loudly, unless
COFFER_REQUIRE_DATABASES=1 (as in CI), where they fail."""

from __future__ import annotations

import json
import os
import random
import secrets as token_source
import threading
import time
from pathlib import Path

import pymysql
import psycopg
from psycopg import sql
import pytest

from conftest import start_coffer, unique

FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:coffer-"
ENV_FILE = Path.home() / ".cache" / "coffer" / "databases.env"
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
KILLS_PER_STEP = 6
STEP_PAUSE_MS = 300


def database_settings() -> dict[str, str]:
    names = [
        "COFFER_TEST_PG_HOST", "COFFER_TEST_PG_PORT", "COFFER_TEST_PG_USER", "COFFER_TEST_PG_PASSWORD",
        "COFFER_TEST_PG_DATABASE", "COFFER_TEST_MYSQL_HOST", "COFFER_TEST_MYSQL_PORT",
        "COFFER_TEST_MYSQL_USER", "COFFER_TEST_MYSQL_PASSWORD", "COFFER_TEST_MYSQL_DATABASE",
    ]
    found = {name: os.environ[name] for name in names if name in os.environ}
    if len(found) < len(names) and ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                key, value = line[len("export "):].split("=", 1)
                found.setdefault(key, value)
    missing = [name for name in names if name not in found]
    if missing:
        message = f"no database servers ({', '.join(missing)} unset): run `e2e/databases.sh start`"
        if os.environ.get("COFFER_REQUIRE_DATABASES") == "1":
            pytest.fail(message, pytrace=False)
        print(f"\n=== SKIPPED database rotation tests: {message} ===")
        pytest.skip(message)
    return found


class Engine:
    """One database server: its admin connection, and logins as any user."""

    def __init__(self, kind: str, settings: dict[str, str]):
        prefix = "COFFER_TEST_PG_" if kind == "postgres" else "COFFER_TEST_MYSQL_"
        self.kind = kind
        self.host = settings[prefix + "HOST"]
        self.port = int(settings[prefix + "PORT"])
        self.admin_user = settings[prefix + "USER"]
        self.admin_password = settings[prefix + "PASSWORD"]
        self.database = settings[prefix + "DATABASE"]

    def connect(self, user: str, password: str):
        if self.kind == "postgres":
            return psycopg.connect(
                host=self.host, port=self.port, user=user, password=password, dbname=self.database,
                connect_timeout=5, sslmode="require",
            )
        return pymysql.connect(
            host=self.host, port=self.port, user=user, password=password, database=self.database,
            connect_timeout=5, ssl={"check_hostname": False},
        )

    def logs_in(self, user: str, password: str) -> bool:
        try:
            with self.connect(user, password) as connection:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                    return cursor.fetchone()[0] == 1
        except (psycopg.OperationalError, pymysql.err.OperationalError):
            return False

    def create_user(self, user: str, password: str) -> None:
        with self.connect(self.admin_user, self.admin_password) as connection:
            with connection.cursor() as cursor:
                if self.kind == "postgres":
                    # DDL takes no bind parameters: quoted by the driver instead.
                    cursor.execute(
                        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(password))
                    )
                    cursor.execute(
                        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                            sql.Identifier(self.database), sql.Identifier(user)
                        )
                    )
                else:
                    # '%%': the host wildcard, escaped from the driver's own formatting.
                    cursor.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
                    cursor.execute(f"GRANT SELECT ON `{self.database}`.* TO '{user}'@'%'")
            connection.commit()

    def credentials(self, user: str, password: str, **extra) -> str:
        return json.dumps({
            "engine": "postgres" if self.kind == "postgres" else "mysql",
            "host": self.host, "port": self.port, "username": user, "password": password,
            "dbname": self.database, "tls": "require", **extra,
        })

    def master_credentials(self) -> str:
        return self.credentials(self.admin_user, self.admin_password)


@pytest.fixture(scope="module")
def settings() -> dict[str, str]:
    return database_settings()


@pytest.fixture(scope="module", params=["postgres", "mysql"])
def engine(request, settings) -> Engine:
    return Engine(request.param, settings)


@pytest.fixture(scope="module")
def sm(coffer):
    return coffer.client(service="secretsmanager")


def new_user(engine: Engine) -> tuple[str, str]:
    user = "rot_" + token_source.token_hex(5)
    password = "initial-" + token_source.token_hex(12)
    engine.create_user(user, password)
    return user, password


def wait_until_rotated(sm, name: str, token: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sm.get_secret_value(SecretId=name)["VersionId"] == token:
            return
        time.sleep(0.02)
    raise AssertionError(f"{name} did not rotate to {token} within {timeout}s")


def current_credentials(sm, name: str, stage: str = "AWSCURRENT") -> dict:
    return json.loads(sm.get_secret_value(SecretId=name, VersionStage=stage)["SecretString"])


def test_single_user_rotation_changes_the_password(sm, engine):
    user, password = new_user(engine)
    name = unique(f"e2e/{engine.kind}-single")
    sm.create_secret(Name=name, SecretString=engine.credentials(user, password))
    started = time.monotonic()
    token = sm.rotate_secret(SecretId=name, RotationLambdaARN=FUNCTION + f"{engine.kind}-single-user")[
        "VersionId"
    ]
    wait_until_rotated(sm, name, token)
    elapsed = time.monotonic() - started
    print(f"\n[figure] one single-user rotation against {engine.kind}: {elapsed * 1000:.0f} ms")
    current = current_credentials(sm, name)
    assert current["username"] == user and current["password"] != password
    assert engine.logs_in(user, current["password"]), "the new password logs in"
    assert not engine.logs_in(user, password), "the old password does not"
    assert current_credentials(sm, name, "AWSPREVIOUS")["password"] == password


def test_alternating_users_flip_and_the_previous_user_keeps_working(sm, engine):
    user, password = new_user(engine)
    master = sm.create_secret(Name=unique(f"e2e/{engine.kind}-master"), SecretString=engine.master_credentials())
    name = unique(f"e2e/{engine.kind}-alternating")
    sm.create_secret(Name=name, SecretString=engine.credentials(user, password, masterarn=master["ARN"]))
    function = FUNCTION + f"{engine.kind}-alternating-users"
    seen = []
    for _ in range(3):
        started = time.monotonic()
        token = sm.rotate_secret(SecretId=name, RotationLambdaARN=function)["VersionId"]
        wait_until_rotated(sm, name, token)
        elapsed = time.monotonic() - started
        current = current_credentials(sm, name)
        previous = current_credentials(sm, name, "AWSPREVIOUS")
        assert engine.logs_in(current["username"], current["password"])
        assert engine.logs_in(previous["username"], previous["password"]), "the previous user still works"
        assert current["username"] != previous["username"]
        seen.append(current["username"])
    print(f"\n[figure] one alternating-users rotation against {engine.kind}: {elapsed * 1000:.0f} ms")
    assert seen == [user + "_clone", user, user + "_clone"]


def test_a_reader_polling_throughout_rotations_always_gets_a_current_that_logs_in(sm, engine):
    """Alternating users: the user CURRENT names keeps its password until the rotation after
    next, so every value a reader gets logs in. (With a single user there is a moment between
    setSecret and finishSecret when the database already has the new password and CURRENT
    still has the old: the reason the alternating variant exists, as in AWS.)"""
    user, password = new_user(engine)
    master = sm.create_secret(Name=unique(f"e2e/{engine.kind}-master"), SecretString=engine.master_credentials())
    name = unique(f"e2e/{engine.kind}-polled")
    sm.create_secret(Name=name, SecretString=engine.credentials(user, password, masterarn=master["ARN"]))
    stop = threading.Event()
    reads: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                value = current_credentials(sm, name)
                reads.append((value["username"], engine.logs_in(value["username"], value["password"])))
        except BaseException as err:  # surfaced below
            errors.append(err)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(3):
            token = sm.rotate_secret(SecretId=name, RotationLambdaARN=FUNCTION + f"{engine.kind}-alternating-users")[
                "VersionId"
            ]
            wait_until_rotated(sm, name, token)
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors, errors
    failed = [read for read in reads if not read[1]]
    print(f"\n[figure] {engine.kind}: {len(reads)} reads during 3 rotations, {len(failed)} that did not log in")
    assert len(reads) >= 10
    assert {username for username, _ in reads} == {user, user + "_clone"}
    assert not failed


@pytest.fixture(scope="module")
def pausing_coffer(tmp_path_factory):
    base = tmp_path_factory.mktemp("coffer-crash")
    instance = start_coffer(base, extra_args=("--rotation-step-pause-ms", str(STEP_PAUSE_MS)))
    try:
        yield instance
    finally:
        instance.server.stop()


def test_kill_9_inside_every_step_never_loses_or_breaks_current(pausing_coffer, settings):
    """24 rotations; each is killed with SIGKILL at a random instant inside a chosen step (six
    per step), the server restarts on the same data directory, and the rotation completes with
    a CURRENT that decrypts and logs in, while the old password no longer does."""
    engine = Engine("postgres", settings)
    coffer = pausing_coffer
    user, password = new_user(engine)
    name = unique("e2e/crash")
    coffer.client(service="secretsmanager").create_secret(Name=name, SecretString=engine.credentials(user, password))
    kills = {step: 0 for step in STEPS}
    broken = 0
    durations = []
    for round_number in range(KILLS_PER_STEP * len(STEPS)):
        target = STEPS[round_number % len(STEPS)]
        sm = coffer.client(service="secretsmanager")
        before = current_credentials(sm, name)
        token = sm.rotate_secret(SecretId=name, RotationLambdaARN=FUNCTION + "postgres-single-user")["VersionId"]
        # Wait until the rotation is inside the target step, then kill at a random instant in it.
        deadline = time.monotonic() + 30
        while True:
            response = coffer.signed_post("secretsmanager.DescribeSecret", {"SecretId": name}, service="secretsmanager")
            step = response.json().get("CofferRotationStatus", {}).get("Step")
            if step == target:
                break
            assert time.monotonic() < deadline, f"the rotation never reached {target} (at {step})"
            time.sleep(0.01)
        time.sleep(random.uniform(0, STEP_PAUSE_MS / 1000))
        coffer.server.process.kill()
        coffer.server.process.wait(timeout=10)
        kills[target] += 1
        restarted = time.monotonic()
        coffer.restart()
        sm = coffer.client(service="secretsmanager")
        wait_until_rotated(sm, name, token, timeout=60)
        durations.append(time.monotonic() - restarted)
        current = current_credentials(sm, name)
        if not engine.logs_in(user, current["password"]) or engine.logs_in(user, before["password"]):
            broken += 1
        response = coffer.signed_post("secretsmanager.DescribeSecret", {"SecretId": name}, service="secretsmanager")
        assert "CofferRotationStatus" not in response.json(), response.text
    print(
        f"\n[figure] crash test: {sum(kills.values())} kills ({kills}), {broken} lost or broken CURRENT "
        f"values; resume-to-finished median {sorted(durations)[len(durations) // 2] * 1000:.0f} ms"
    )
    assert broken == 0
    assert all(count >= KILLS_PER_STEP for count in kills.values())
