//! The `postgres` and `mysql` rotation strategies against real servers: PostgreSQL and MariaDB
//! as `e2e/databases.sh start` runs them (`.ci/run` does, and sources the file it writes).
//!
//! The servers come from `COFFER_TEST_PG_*`, `COFFER_TEST_MYSQL_*` and `COFFER_TEST_DB_CA`
//! (~/.cache/coffer/databases.env). Without them each test says SKIPPED, unless
//! `COFFER_REQUIRE_DATABASES=1`, when it fails. Every test makes users of its own, so the tests
//! run in parallel, and prints how long each full rotation took.

// Test code: a failed assumption is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write as _;
use std::time::Instant;

use base64::Engine as _;
use coffer::crypto::SecretBytes;
use coffer::engine::rotation::{RotationStrategy, Step, StepError, StepOutcome, StepRequest};
use coffer::rotation::mysql::MysqlStrategy;
use coffer::rotation::postgres::PostgresStrategy;
use mysql_async::prelude::Queryable as _;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Postgres,
    Mariadb,
}

/// A server of the env file, and the admin that sets tests up.
struct Server {
    kind: Kind,
    host: String,
    port: u16,
    admin: String,
    admin_password: String,
    database: String,
    ca_pem: Vec<u8>,
}

macro_rules! server_or_skip {
    ($kind:expr) => {
        match Server::from_env($kind) {
            Some(server) => server,
            None => {
                assert!(
                    std::env::var("COFFER_REQUIRE_DATABASES").as_deref() != Ok("1"),
                    "COFFER_REQUIRE_DATABASES=1 but the database servers are not configured: run \
                     `e2e/databases.sh start` and source ~/.cache/coffer/databases.env"
                );
                // Straight to stderr, past the test harness's capture, so the skip shows.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n=== SKIPPED: no {:?} server: run `e2e/databases.sh start` and source \
                     ~/.cache/coffer/databases.env (as .ci/run does) ===\n",
                    $kind
                );
                return;
            }
        }
    };
}

impl Server {
    fn from_env(kind: Kind) -> Option<Server> {
        let prefix = match kind {
            Kind::Postgres => "COFFER_TEST_PG",
            Kind::Mariadb => "COFFER_TEST_MYSQL",
        };
        let var = |name: &str| std::env::var(format!("{prefix}_{name}")).ok();
        let ca = std::env::var("COFFER_TEST_DB_CA").ok()?;
        Some(Server {
            kind,
            host: var("HOST")?,
            port: var("PORT")?.parse().ok()?,
            admin: var("USER")?,
            admin_password: var("PASSWORD")?,
            database: var("DATABASE")?,
            ca_pem: std::fs::read(ca).ok()?,
        })
    }

    fn strategy(&self) -> Box<dyn RotationStrategy> {
        match self.kind {
            Kind::Postgres => Box::new(PostgresStrategy::new()),
            Kind::Mariadb => Box::new(MysqlStrategy::new()),
        }
    }

    fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }

    /// A secret's value for `username` as AWS's rotation functions read it.
    fn secret(&self, username: &str, password: &str) -> SecretBytes {
        json_secret(&json!({
            "engine": match self.kind { Kind::Postgres => "postgres", Kind::Mariadb => "mariadb" },
            "host": self.host,
            "port": self.port,
            "username": username,
            "password": password,
            "dbname": self.database,
            "note": "kept by every rotation",
        }))
    }

    /// The master secret: the admin's name and password only (as RDS makes them).
    fn master(&self) -> SecretBytes {
        json_secret(&json!({"username": self.admin, "password": self.admin_password}))
    }

    /// Runs SQL as the admin in the test database.
    async fn admin(&self, statements: &[String]) {
        match self.kind {
            Kind::Postgres => {
                let client = pg_client(self, &self.admin, &self.admin_password)
                    .await
                    .unwrap();
                for statement in statements {
                    client.batch_execute(statement).await.unwrap();
                }
            }
            Kind::Mariadb => {
                let mut conn = my_conn(self, &self.admin, &self.admin_password)
                    .await
                    .unwrap();
                for statement in statements {
                    conn.query_drop(statement).await.unwrap();
                }
                conn.disconnect().await.unwrap();
            }
        }
    }

    /// A user allowed to read table `table`, which is made for it.
    async fn make_user(&self, user: &str, password: &str, table: &str) {
        match self.kind {
            Kind::Postgres => {
                self.admin(&[
                    format!("CREATE ROLE {user} WITH LOGIN PASSWORD '{password}'"),
                    format!("CREATE TABLE {table} (x int)"),
                    format!("GRANT SELECT ON {table} TO {user}"),
                ])
                .await
            }
            Kind::Mariadb => {
                self.admin(&[
                    format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"),
                    format!("CREATE TABLE {}.{table} (x int)", self.database),
                    format!("GRANT SELECT ON {}.{table} TO '{user}'@'%'", self.database),
                ])
                .await
            }
        }
    }

    /// Removes what a test made (best effort: a leftover only costs a name).
    async fn drop_user(&self, users: &[&str], table: &str) {
        let mut statements = Vec::new();
        match self.kind {
            Kind::Postgres => {
                statements.push(format!("DROP TABLE IF EXISTS {table}"));
                for user in users {
                    statements.push(format!("DROP ROLE IF EXISTS {user}"));
                }
            }
            Kind::Mariadb => {
                statements.push(format!("DROP TABLE IF EXISTS {}.{table}", self.database));
                for user in users {
                    statements.push(format!("DROP USER IF EXISTS '{user}'@'%'"));
                }
            }
        }
        self.admin(&statements).await;
    }

    /// Whether `user` logs in with `password` and may read `table`; the error otherwise.
    async fn login(&self, user: &str, password: &str, table: &str) -> Result<(), String> {
        match self.kind {
            Kind::Postgres => {
                let client = pg_client(self, user, password)
                    .await
                    .map_err(|e| e.to_string())?;
                client
                    .batch_execute(&format!("SELECT count(*) FROM {table}"))
                    .await
                    .map_err(|e| e.to_string())
            }
            Kind::Mariadb => {
                let mut conn = my_conn(self, user, password)
                    .await
                    .map_err(|e| e.to_string())?;
                let result = conn
                    .query_drop(format!("SELECT COUNT(*) FROM {}.{table}", self.database))
                    .await
                    .map_err(|e| e.to_string());
                conn.disconnect().await.unwrap();
                result
            }
        }
    }
}

/// A client of the test database without TLS (the servers allow both).
async fn pg_client(
    server: &Server,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(&server.host)
        .port(server.port)
        .user(user)
        .password(password)
        .dbname(&server.database)
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn my_conn(
    server: &Server,
    user: &str,
    password: &str,
) -> Result<mysql_async::Conn, mysql_async::Error> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(server.host.clone())
        .tcp_port(server.port)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false);
    mysql_async::Conn::new(opts).await
}

fn json_secret(value: &Value) -> SecretBytes {
    SecretBytes::new(serde_json::to_vec(value).unwrap())
}

fn parse(value: &SecretBytes) -> Value {
    serde_json::from_slice(value.expose()).unwrap()
}

/// Names unique to one test run.
fn unique(stem: &str) -> String {
    format!("{stem}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// One step, as the engine runs it.
async fn step(
    strategy: &dyn RotationStrategy,
    step: Step,
    settings: &Value,
    current: &SecretBytes,
    pending: Option<&SecretBytes>,
    master: Option<&SecretBytes>,
) -> Result<StepOutcome, StepError> {
    strategy
        .run(StepRequest {
            step,
            secret_id: "arn:aws:secretsmanager:us-east-1:000000000000:secret:db-AbCdEf",
            namespace: "default",
            name: "db",
            token: "token",
            settings,
            current: Some(current),
            pending,
            referenced: master,
            attempt: 0,
        })
        .await
}

/// createSecret: the pending value.
async fn create(
    strategy: &dyn RotationStrategy,
    settings: &Value,
    current: &SecretBytes,
) -> SecretBytes {
    match step(strategy, Step::CreateSecret, settings, current, None, None).await {
        Ok(StepOutcome::Pending(value)) => value,
        Ok(_) => panic!("createSecret made no value"),
        Err(e) => panic!("{e}"),
    }
}

/// The four steps; returns the new current value, and prints how long they took.
async fn rotate(
    server: &Server,
    label: &str,
    settings: &Value,
    current: &SecretBytes,
    master: Option<&SecretBytes>,
) -> SecretBytes {
    let strategy = server.strategy();
    let strategy = strategy.as_ref();
    let started = Instant::now();
    let pending = create(strategy, settings, current).await;
    for next in [Step::SetSecret, Step::TestSecret, Step::FinishSecret] {
        let outcome = step(strategy, next, settings, current, Some(&pending), master)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert!(matches!(outcome, StepOutcome::Done));
    }
    println!(
        "rotation timing: {:?} {label}: {} ms for the four steps",
        server.kind,
        started.elapsed().as_millis()
    );
    pending
}

fn password_of(value: &SecretBytes) -> String {
    parse(value)["password"].as_str().unwrap().to_owned()
}

fn user_of(value: &SecretBytes) -> String {
    parse(value)["username"].as_str().unwrap().to_owned()
}

async fn single_user(kind: Kind, tls: &str) {
    let server = server_or_skip!(kind);
    let user = unique("coffer_single");
    let table = unique("t_single");
    let old = "Old-password-1";
    server.make_user(&user, old, &table).await;
    let mut settings = json!({"variant": "singleUser", "tls": tls});
    if tls == "verifyFull" {
        settings["caBundle"] = json!(server.ca_bundle());
    }
    server.strategy().check_settings(&settings).unwrap();
    let current = server.secret(&user, old);
    let label = format!("single user, tls {tls}");
    let new = rotate(&server, &label, &settings, &current, None).await;

    let value = parse(&new);
    assert_eq!(value["username"], json!(user));
    assert_eq!(value["note"], json!("kept by every rotation"));
    assert_eq!(value["port"], json!(server.port));
    let password = password_of(&new);
    assert_ne!(password, old);
    server.login(&user, &password, &table).await.unwrap();
    assert!(server.login(&user, old, &table).await.is_err());
    server.drop_user(&[&user], &table).await;
}

#[tokio::test]
async fn postgres_single_user_verify_full() {
    single_user(Kind::Postgres, "verifyFull").await;
}

#[tokio::test]
async fn mariadb_single_user_verify_full() {
    single_user(Kind::Mariadb, "verifyFull").await;
}

#[tokio::test]
async fn postgres_single_user_tls_require() {
    single_user(Kind::Postgres, "require").await;
}

#[tokio::test]
async fn mariadb_single_user_tls_require() {
    single_user(Kind::Mariadb, "require").await;
}

#[tokio::test]
async fn postgres_single_user_without_tls() {
    single_user(Kind::Postgres, "disable").await;
}

#[tokio::test]
async fn mariadb_single_user_without_tls() {
    single_user(Kind::Mariadb, "disable").await;
}

async fn alternating_users(kind: Kind) {
    let server = server_or_skip!(kind);
    let user = unique("coffer_alt");
    let clone = format!("{user}_clone");
    let table = unique("t_alt");
    let first = "First-password-1";
    server.make_user(&user, first, &table).await;
    let settings =
        json!({"variant": "alternatingUsers", "masterSecret": "db-master", "tls": "require"});
    let strategy = server.strategy();
    let current = server.secret(&user, first);
    assert_eq!(
        strategy
            .referenced_secret(&settings, Some(&current))
            .as_deref(),
        Some("db-master")
    );
    let master = server.master();

    // The first rotation makes the clone, with the original's privileges.
    let second = rotate(
        &server,
        "alternating users, clone made",
        &settings,
        &current,
        Some(&master),
    )
    .await;
    assert_eq!(user_of(&second), clone);
    assert_eq!(parse(&second)["note"], json!("kept by every rotation"));
    server
        .login(&clone, &password_of(&second), &table)
        .await
        .unwrap();
    // The user in use before keeps working until the next rotation.
    server.login(&user, first, &table).await.unwrap();

    // The second flips back to the original user, with a new password.
    let third = rotate(
        &server,
        "alternating users, flip back",
        &settings,
        &second,
        Some(&master),
    )
    .await;
    assert_eq!(user_of(&third), user);
    server
        .login(&user, &password_of(&third), &table)
        .await
        .unwrap();
    assert!(server.login(&user, first, &table).await.is_err());
    server
        .login(&clone, &password_of(&second), &table)
        .await
        .unwrap();

    // And the third to the clone again, which exists now.
    let fourth = rotate(
        &server,
        "alternating users, clone again",
        &settings,
        &third,
        Some(&master),
    )
    .await;
    assert_eq!(user_of(&fourth), clone);
    server
        .login(&clone, &password_of(&fourth), &table)
        .await
        .unwrap();
    assert!(
        server
            .login(&clone, &password_of(&second), &table)
            .await
            .is_err()
    );
    server.drop_user(&[&user, &clone], &table).await;
}

#[tokio::test]
async fn postgres_alternating_users() {
    alternating_users(Kind::Postgres).await;
}

#[tokio::test]
async fn mariadb_alternating_users() {
    alternating_users(Kind::Mariadb).await;
}

/// setSecret twice, and after a crash that left the password already changed.
async fn idempotent(kind: Kind) {
    let server = server_or_skip!(kind);
    let strategy = server.strategy();
    let strategy = strategy.as_ref();
    let user = unique("coffer_idem");
    let table = unique("t_idem");
    let old = "Old-password-2";
    server.make_user(&user, old, &table).await;
    let settings = json!({"tls": "require"});
    let current = server.secret(&user, old);

    let pending = create(strategy, &settings, &current).await;
    for _ in 0..2 {
        step(
            strategy,
            Step::SetSecret,
            &settings,
            &current,
            Some(&pending),
            None,
        )
        .await
        .unwrap();
    }
    step(
        strategy,
        Step::TestSecret,
        &settings,
        &current,
        Some(&pending),
        None,
    )
    .await
    .unwrap();
    server
        .login(&user, &password_of(&pending), &table)
        .await
        .unwrap();

    // A crash after the server took the new password, before the step was recorded: the next
    // rotation's setSecret finds the pending password already set.
    let next = create(strategy, &settings, &pending).await;
    let password = password_of(&next);
    match kind {
        Kind::Postgres => {
            server
                .admin(&[format!("ALTER ROLE {user} PASSWORD '{password}'")])
                .await
        }
        Kind::Mariadb => {
            server
                .admin(&[format!(
                    "ALTER USER '{user}'@'%' IDENTIFIED BY '{password}'"
                )])
                .await
        }
    }
    step(
        strategy,
        Step::SetSecret,
        &settings,
        &pending,
        Some(&next),
        None,
    )
    .await
    .unwrap();
    step(
        strategy,
        Step::TestSecret,
        &settings,
        &pending,
        Some(&next),
        None,
    )
    .await
    .unwrap();

    // Alternating users: setSecret twice too, the second time on an existing clone.
    let settings = json!({"variant": "alternatingUsers", "tls": "require"});
    let master = server.master();
    let pending = create(strategy, &settings, &next).await;
    for _ in 0..2 {
        step(
            strategy,
            Step::SetSecret,
            &settings,
            &next,
            Some(&pending),
            Some(&master),
        )
        .await
        .unwrap();
    }
    step(
        strategy,
        Step::TestSecret,
        &settings,
        &next,
        Some(&pending),
        Some(&master),
    )
    .await
    .unwrap();
    let clone = format!("{user}_clone");
    server
        .login(&clone, &password_of(&pending), &table)
        .await
        .unwrap();
    server.drop_user(&[&user, &clone], &table).await;
}

#[tokio::test]
async fn postgres_set_secret_is_idempotent() {
    idempotent(Kind::Postgres).await;
}

#[tokio::test]
async fn mariadb_set_secret_is_idempotent() {
    idempotent(Kind::Mariadb).await;
}

/// Failures name the server and user but never a password, and are permanent.
async fn errors_hide_passwords(kind: Kind) {
    let server = server_or_skip!(kind);
    let strategy = server.strategy();
    let strategy = strategy.as_ref();
    let user = unique("coffer_err");
    let table = unique("t_err");
    let real = "Real-password-3";
    server.make_user(&user, real, &table).await;
    let wrong = "Wrong-password-3";
    let settings = json!({"tls": "require"});
    let current = server.secret(&user, wrong);
    let pending = create(strategy, &settings, &current).await;
    let new = password_of(&pending);

    let set = step(
        strategy,
        Step::SetSecret,
        &settings,
        &current,
        Some(&pending),
        None,
    )
    .await
    .err()
    .unwrap();
    let test = step(
        strategy,
        Step::TestSecret,
        &settings,
        &current,
        Some(&pending),
        None,
    )
    .await
    .err()
    .unwrap();
    // A master secret with a wrong password.
    let master = json_secret(&json!({"username": server.admin, "password": wrong}));
    let alternating = json!({"variant": "alternatingUsers", "tls": "require"});
    let master_failed = step(
        strategy,
        Step::SetSecret,
        &alternating,
        &current,
        Some(&pending),
        Some(&master),
    )
    .await
    .err()
    .unwrap();
    // A server that wants TLS verified against a CA it was not signed by.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let bundle = base64::engine::general_purpose::STANDARD.encode(other.cert.pem());
    let verify = json!({"tls": "verifyFull", "caBundle": bundle});
    let untrusted = step(
        strategy,
        Step::TestSecret,
        &verify,
        &current,
        Some(&pending),
        None,
    )
    .await
    .err()
    .unwrap();

    for error in [&set, &test, &master_failed, &untrusted] {
        let text = format!("{error} {error:?}");
        println!("{:?} error: {error}", server.kind);
        for secret in [wrong, real, new.as_str(), server.admin_password.as_str()] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(!error.retryable, "{text}");
        assert!(error.reason.contains(&server.host), "{text}");
    }
    assert!(set.reason.contains(&user), "{}", set.reason);
    assert!(
        master_failed.reason.contains(&server.admin),
        "{}",
        master_failed.reason
    );
    assert!(untrusted.reason.contains("TLS"), "{}", untrusted.reason);
    server.drop_user(&[&user], &table).await;
}

#[tokio::test]
async fn postgres_errors_hide_passwords() {
    errors_hide_passwords(Kind::Postgres).await;
}

#[tokio::test]
async fn mariadb_errors_hide_passwords() {
    errors_hide_passwords(Kind::Mariadb).await;
}

/// A port nothing listens on: a transient failure, quickly. Needs no server.
#[tokio::test]
async fn a_dead_port_is_a_transient_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let password = "Dead-port-password-4";
    let value = json_secret(&json!({
        "host": "127.0.0.1", "port": port, "username": "nobody", "password": password,
    }));
    let strategies: [Box<dyn RotationStrategy>; 2] = [
        Box::new(PostgresStrategy::new()),
        Box::new(MysqlStrategy::new()),
    ];
    assert_eq!(
        strategies.each_ref().map(|s| s.name()),
        ["postgres", "mysql"]
    );
    for strategy in strategies {
        let started = Instant::now();
        let error = step(
            strategy.as_ref(),
            Step::TestSecret,
            &json!({"tls": "require"}),
            &value,
            Some(&value),
            None,
        )
        .await
        .err()
        .unwrap();
        assert!(error.retryable, "{error}");
        assert!(
            error.reason.contains(&format!("127.0.0.1:{port}")),
            "{error}"
        );
        assert!(!error.reason.contains(password), "{error}");
        assert!(started.elapsed().as_secs() < 10);
    }
}

/// A server that takes the connection and never answers: a transient failure after the
/// connect timeout, not a step that hangs. Needs no server.
#[tokio::test]
async fn a_silent_server_times_out() {
    // Never accepted: the kernel completes the handshake, and nothing is ever said.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let value = json_secret(&json!({
        "host": "127.0.0.1", "port": port, "username": "nobody", "password": "Silent-7",
    }));
    let settings = json!({"tls": "require"});
    let (postgres, mysql) = (PostgresStrategy::new(), MysqlStrategy::new());
    let started = Instant::now();
    let (postgres, mysql) = tokio::join!(
        step(
            &postgres,
            Step::TestSecret,
            &settings,
            &value,
            Some(&value),
            None
        ),
        step(
            &mysql,
            Step::TestSecret,
            &settings,
            &value,
            Some(&value),
            None
        ),
    );
    for error in [postgres.err().unwrap(), mysql.err().unwrap()] {
        assert!(error.retryable, "{error}");
        assert!(error.reason.contains("did not answer"), "{error}");
    }
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    drop(listener);
}

/// Values and settings that cannot work fail permanently, before any connection.
#[tokio::test]
async fn bad_values_are_permanent_errors() {
    let strategy = PostgresStrategy::new();
    let settings = json!({"tls": "require"});
    let not_json = SecretBytes::from_slice(b"password=Plain-text-5");
    let error = step(
        &strategy,
        Step::CreateSecret,
        &settings,
        &not_json,
        None,
        None,
    )
    .await
    .err()
    .unwrap();
    assert!(!error.retryable);
    assert!(!error.reason.contains("Plain-text-5"), "{error}");
    let no_host = json_secret(&json!({"username": "u", "password": "No-host-6"}));
    let error = step(
        &strategy,
        Step::CreateSecret,
        &settings,
        &no_host,
        None,
        None,
    )
    .await
    .err()
    .unwrap();
    assert!(!error.retryable && error.reason.contains("host"), "{error}");
    let error = step(
        &MysqlStrategy::new(),
        Step::SetSecret,
        &json!({"tls": "sometimes"}),
        &no_host,
        Some(&no_host),
        None,
    )
    .await
    .err()
    .unwrap();
    assert!(
        !error.retryable && error.reason.contains("settings"),
        "{error}"
    );
    assert!(
        strategy
            .check_settings(&json!({"variant": "alternatingUsers"}))
            .is_ok()
    );
    assert!(
        strategy
            .check_settings(&json!({"masterSecret": 3}))
            .is_err()
    );
}
