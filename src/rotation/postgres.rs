//! The `postgres` strategy: PostgreSQL (10 or later) credentials, single or alternating users
//! ([`super::database`] has the steps and settings).
//!
//! New passwords go to the server as SCRAM-SHA-256 verifiers computed here, never as text, so
//! no statement log or error message on the server can hold one. A clone of alternating users
//! is created as a member of the original role, so it has the original's privileges.

use std::error::Error as _;

use async_trait::async_trait;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroize;

use super::database::{self, CONNECT_TIMEOUT, DatabaseError, Dialect, Login, Tls};
use crate::crypto::SecretBytes;

/// PostgreSQL truncates longer identifiers, which would make a clone's name another role's.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Rotates PostgreSQL credentials.
pub type PostgresStrategy = database::DatabaseStrategy<Postgres>;

impl PostgresStrategy {
    pub fn new() -> Self {
        database::DatabaseStrategy::of(Postgres)
    }
}

/// The postgres dialect of the database steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Postgres;

#[async_trait]
impl Dialect for Postgres {
    const NAME: &'static str = "postgres";
    const DEFAULT_PORT: u16 = 5432;

    async fn check_login(&self, login: &Login, tls: &Tls) -> Result<(), DatabaseError> {
        let client = connect(login, tls).await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| classify(e, &login.target(), "SELECT 1", true))?;
        Ok(())
    }

    async fn set_own_password(
        &self,
        login: &Login,
        new: &SecretBytes,
        tls: &Tls,
    ) -> Result<(), DatabaseError> {
        let client = connect(login, tls).await?;
        let mut statement = format!("ALTER ROLE CURRENT_USER PASSWORD {}", verifier(new));
        let result = client.batch_execute(&statement).await;
        statement.zeroize();
        result.map_err(|e| classify(e, &login.target(), "ALTER ROLE", false))
    }

    async fn set_user_password(
        &self,
        master: &Login,
        username: &str,
        original: &str,
        new: &SecretBytes,
        tls: &Tls,
    ) -> Result<(), DatabaseError> {
        if username.len() > MAX_IDENTIFIER_BYTES {
            return Err(DatabaseError::Value(format!(
                "the user name {username} is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes"
            )));
        }
        let target = master.target();
        let mut client = connect(master, tls).await?;
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&username],
            )
            .await
            .map_err(|e| classify(e, &target, "looking up the role", true))?
            .is_some();
        let user = quote_identifier(username);
        let (what, mut statement) = if exists || username == original {
            (
                "ALTER ROLE",
                format!("ALTER ROLE {user} PASSWORD {}", verifier(new)),
            )
        } else {
            // One transaction: a crash cannot leave a clone without the original's privileges.
            let grant = quote_identifier(original);
            (
                "CREATE ROLE",
                format!(
                    "CREATE ROLE {user} WITH LOGIN PASSWORD {}; GRANT {grant} TO {user}",
                    verifier(new)
                ),
            )
        };
        let result = async {
            let transaction = client.transaction().await?;
            transaction.batch_execute(&statement).await?;
            transaction.commit().await
        }
        .await;
        statement.zeroize();
        result.map_err(|e| classify(e, &target, what, false))
    }
}

/// A SCRAM-SHA-256 verifier as a SQL literal: base64, `$` and `:` only, so nothing to escape.
fn verifier(password: &SecretBytes) -> String {
    let mut verifier = postgres_protocol::password::scram_sha_256(password.expose());
    let literal = format!("'{verifier}'");
    verifier.zeroize();
    literal
}

/// A quoted identifier: any name, the quotes inside doubled.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn connect(login: &Login, tls: &Tls) -> Result<Client, DatabaseError> {
    let target = login.target();
    let mut config = tokio_postgres::Config::new();
    config
        .host(&login.host)
        .port(login.port)
        .user(&login.username)
        .password(login.password.expose())
        .dbname(login.dbname.as_deref().unwrap_or("postgres"))
        .application_name("coffer-rotation")
        .connect_timeout(CONNECT_TIMEOUT);
    let rustls = database::client_config(tls, &target)?;
    let connecting = async {
        match rustls {
            None => {
                config.ssl_mode(SslMode::Disable);
                spawn_connection(config.connect(NoTls).await?)
            }
            Some(rustls) => {
                config.ssl_mode(SslMode::Require);
                spawn_connection(config.connect(MakeRustlsConnect::new(rustls)).await?)
            }
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(connected) => connected.map_err(|e| classify(e, &target, "login", true)),
        Err(_) => Err(DatabaseError::Timeout {
            target,
            seconds: CONNECT_TIMEOUT.as_secs(),
        }),
    }
}

/// Runs the connection until the client is dropped.
fn spawn_connection<S, T>(
    (client, connection): (Client, tokio_postgres::Connection<S, T>),
) -> Result<Client, tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Maps a driver error. `quote_server` is false for statements holding a verifier: the server's
/// message is left out then, as a syntax error quotes the statement.
fn classify(
    error: tokio_postgres::Error,
    target: &str,
    what: &'static str,
    quote_server: bool,
) -> DatabaseError {
    let target = target.to_owned();
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        let detail = if quote_server {
            format!("SQLSTATE {code}: {}", db.message())
        } else {
            format!("SQLSTATE {code}")
        };
        if what == "login" && code.starts_with("28") {
            return DatabaseError::Rejected { target, detail };
        }
        // Connection problems, serialization failures, lack of resources, shutdowns and
        // lock timeouts pass; the rest (privileges, syntax) does not.
        let transient = ["08", "40", "53", "57"]
            .iter()
            .any(|class| code.starts_with(class))
            || code == "55P03";
        return DatabaseError::Server {
            target,
            what,
            detail,
            transient,
        };
    }
    let mut source = error.source();
    while let Some(cause) = source {
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return DatabaseError::Tls {
                target,
                detail: tls.to_string(),
            };
        }
        source = cause.source();
    }
    let detail = describe(&error);
    if detail.contains("server does not support TLS") {
        return DatabaseError::Tls { target, detail };
    }
    DatabaseError::Unreachable { target, detail }
}

/// The error and its causes, on one line.
fn describe(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
