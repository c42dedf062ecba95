//! The `mysql` strategy: MySQL (5.7 or later) and MariaDB (10.4 or later) credentials, single or
//! alternating users ([`super::database`] has the steps and settings).
//!
//! `ALTER USER ... IDENTIFIED BY` takes no bind parameter, so a new password goes in a string
//! literal; passwords with a quote, a backslash or a control character are refused rather than
//! escaped (whether a backslash escapes depends on the session's SQL mode). Generated passwords
//! never hold them. A clone of alternating users gets the original's grants, as `SHOW GRANTS`
//! lists them, for every host the original is defined for.

use async_trait::async_trait;
use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use zeroize::Zeroize;

use super::database::{self, CONNECT_TIMEOUT, DatabaseError, Dialect, Login, Tls, TlsMode};
use crate::crypto::SecretBytes;

/// Rotates MySQL and MariaDB credentials.
pub type MysqlStrategy = database::DatabaseStrategy<Mysql>;

impl MysqlStrategy {
    pub fn new() -> Self {
        database::DatabaseStrategy::of(Mysql)
    }
}

/// The mysql dialect of the database steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mysql;

#[async_trait]
impl Dialect for Mysql {
    const NAME: &'static str = "mysql";
    const DEFAULT_PORT: u16 = 3306;

    async fn check_login(&self, login: &Login, tls: &Tls) -> Result<(), DatabaseError> {
        let target = login.target();
        let mut conn = connect(login, tls).await?;
        let result = conn.query_drop("SELECT 1").await;
        close(conn).await;
        result.map_err(|e| classify(e, &target, "SELECT 1", true))
    }

    async fn set_own_password(
        &self,
        login: &Login,
        new: &SecretBytes,
        tls: &Tls,
    ) -> Result<(), DatabaseError> {
        let target = login.target();
        let mut literal = password_literal(new)?;
        let mut conn = connect(login, tls).await?;
        let result = set_own(&mut conn, &target, &literal).await;
        literal.zeroize();
        close(conn).await;
        result
    }

    async fn set_user_password(
        &self,
        master: &Login,
        username: &str,
        original: &str,
        new: &SecretBytes,
        tls: &Tls,
    ) -> Result<(), DatabaseError> {
        let target = master.target();
        let mut literal = password_literal(new)?;
        let mut conn = connect(master, tls).await?;
        let result = set_user(&mut conn, &target, username, original, &literal).await;
        literal.zeroize();
        close(conn).await;
        result
    }
}

/// A user's own password. MariaDB lets a user without `CREATE USER` change it only through
/// `SET PASSWORD`; MySQL 8 has no `PASSWORD()` but lets anyone `ALTER USER USER()`.
async fn set_own(conn: &mut Conn, target: &str, literal: &str) -> Result<(), DatabaseError> {
    let version: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| classify(e, target, "SELECT VERSION()", true))?;
    let mut statement = if version.is_some_and(|version| version.contains("MariaDB")) {
        format!("SET PASSWORD = PASSWORD({literal})")
    } else {
        format!("ALTER USER USER() IDENTIFIED BY {literal}")
    };
    let result = conn.query_drop(&statement).await;
    statement.zeroize();
    result.map_err(|e| classify(e, target, "changing the password", false))
}

/// Sets `username`'s password on every host `original` is defined for, creating the clone and
/// copying the grants when `username` is not `original`. Each statement is idempotent, so a run
/// after a crash completes what the first began (copying the grants again also brings a clone
/// made earlier up to date).
async fn set_user(
    conn: &mut Conn,
    target: &str,
    username: &str,
    original: &str,
    literal: &str,
) -> Result<(), DatabaseError> {
    let hosts: Vec<String> = conn
        .exec("SELECT Host FROM mysql.user WHERE User = ?", (original,))
        .await
        .map_err(|e| classify(e, target, "looking up the user", true))?;
    if hosts.is_empty() {
        return Err(DatabaseError::Value(format!(
            "the user {original} does not exist on {target}"
        )));
    }
    for host in &hosts {
        let account = format!("{}@{}", quote_literal(username)?, quote_literal(host)?);
        // A clone is made locked and without a password, gets its grants, and only then a
        // password: it cannot log in half made, and a run after a crash finishes the job.
        let unlock = if username == original {
            ""
        } else {
            conn.query_drop(format!("CREATE USER IF NOT EXISTS {account} ACCOUNT LOCK"))
                .await
                .map_err(|e| classify(e, target, "CREATE USER", true))?;
            copy_grants(conn, target, original, username, host).await?;
            " ACCOUNT UNLOCK"
        };
        let mut alter = format!("ALTER USER {account} IDENTIFIED BY {literal}{unlock}");
        let result = conn.query_drop(&alter).await;
        alter.zeroize();
        result.map_err(|e| classify(e, target, "ALTER USER", false))?;
    }
    Ok(())
}

/// Grants `clone`@`host` what `original`@`host` has (privileges, roles, the default role).
async fn copy_grants(
    conn: &mut Conn,
    target: &str,
    original: &str,
    clone: &str,
    host: &str,
) -> Result<(), DatabaseError> {
    let account = format!("{}@{}", quote_literal(original)?, quote_literal(host)?);
    let mut grants: Vec<String> = conn
        .query(format!("SHOW GRANTS FOR {account}"))
        .await
        .map_err(|e| classify(e, target, "SHOW GRANTS", true))?;
    let mut result = Ok(());
    for grant in &grants {
        let Some(mut statement) = rewrite_grant(grant, original, clone, host) else {
            continue;
        };
        let executed = conn.query_drop(&statement).await;
        statement.zeroize();
        if let Err(e) = executed {
            // The statement came from SHOW GRANTS: its text stays out of the message.
            result = Err(classify(e, target, "copying a grant", false));
            break;
        }
    }
    // MariaDB's first line may carry the original's password hash.
    grants.iter_mut().for_each(Zeroize::zeroize);
    result
}

/// A line of `SHOW GRANTS` for `original`@`host` made into the same grant for `clone`@`host`;
/// `None` for the account's own line (`GRANT USAGE ON *.*`), which creating the user covers.
/// Any `IDENTIFIED ...` clause (the original's password hash) is left out.
fn rewrite_grant(grant: &str, original: &str, clone: &str, host: &str) -> Option<String> {
    if grant.starts_with("GRANT USAGE ON *.* TO ") {
        return None;
    }
    let mut grant = grant.to_owned();
    if let Some(start) = grant.find(" IDENTIFIED ") {
        let rest = grant.get(start + 1..).unwrap_or("");
        let end = [" REQUIRE ", " WITH "]
            .iter()
            .filter_map(|clause| rest.find(clause))
            .min()
            .map_or(grant.len(), |offset| start + 1 + offset);
        grant.replace_range(start..end, "");
    }
    for (quote, escape) in [("`", "``"), ("'", "''")] {
        let name = |user: &str| {
            format!(
                "{quote}{}{quote}@{quote}{}{quote}",
                user.replace(quote, escape),
                host.replace(quote, escape)
            )
        };
        let from = name(original);
        if let Some(at) = grant.rfind(&from) {
            grant.replace_range(at..at + from.len(), &name(clone));
            return Some(grant);
        }
    }
    None
}

/// A string literal for a user or host name.
fn quote_literal(text: &str) -> Result<String, DatabaseError> {
    if text.contains(['\'', '\\']) || text.chars().any(char::is_control) {
        return Err(DatabaseError::Value(format!(
            "the name {text:?} holds a quote, a backslash or a control character"
        )));
    }
    Ok(format!("'{text}'"))
}

/// The password as a string literal, or why it cannot be one (never the password itself).
fn password_literal(password: &SecretBytes) -> Result<String, DatabaseError> {
    let text = std::str::from_utf8(password.expose())
        .map_err(|_| DatabaseError::Value("the new password is not UTF-8".into()))?;
    if text.contains(['\'', '\\']) || text.chars().any(char::is_control) {
        return Err(DatabaseError::Value(
            "the new password holds a quote, a backslash or a control character, which MySQL \
             statements cannot take safely: exclude them (settings.password.excludeCharacters)"
                .into(),
        ));
    }
    Ok(format!("'{text}'"))
}

async fn connect(login: &Login, tls: &Tls) -> Result<Conn, DatabaseError> {
    let target = login.target();
    let mut password = std::str::from_utf8(login.password.expose())
        .map_err(|_| DatabaseError::Value(format!("the password of {target} is not UTF-8")))?
        .to_owned();
    let opts = OptsBuilder::default()
        .ip_or_hostname(login.host.clone())
        .tcp_port(login.port)
        .user(Some(login.username.clone()))
        .pass(Some(password.clone()))
        .db_name(login.dbname.clone())
        // Else the driver moves to the server's Unix socket when it runs on the same machine.
        .prefer_socket(false)
        .ssl_opts(ssl_opts(tls));
    password.zeroize();
    match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
        Ok(connected) => connected.map_err(|e| classify(e, &target, "login", true)),
        Err(_) => Err(DatabaseError::Timeout {
            target,
            seconds: CONNECT_TIMEOUT.as_secs(),
        }),
    }
}

/// The driver's TLS options; it builds its own rustls configuration (on ring, the only
/// provider in the build). Its built-in roots never decide: `require` checks no certificate
/// (the driver still wants roots to build its verifier), `verifyFull` uses only ours.
fn ssl_opts(tls: &Tls) -> Option<SslOpts> {
    let opts = SslOpts::default();
    match tls.mode {
        TlsMode::Disable => None,
        TlsMode::Require => Some(
            opts.with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        TlsMode::VerifyFull => {
            let certs = if tls.ca.is_empty() {
                database::system_roots()
            } else {
                tls.ca.as_slice()
            };
            let roots = certs
                .iter()
                .map(|cert| cert.as_ref().to_vec().into())
                .collect();
            Some(
                opts.with_disable_built_in_roots(true)
                    .with_root_certs(roots),
            )
        }
    }
}

/// Closes politely, so the server logs no aborted connection; a failure changes nothing.
async fn close(conn: Conn) {
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, conn.disconnect()).await;
}

/// Maps a driver error. `quote_server` is false for statements holding a password or copied
/// from `SHOW GRANTS`: the server's message is left out then, as a syntax error quotes the
/// statement.
fn classify(
    error: mysql_async::Error,
    target: &str,
    what: &'static str,
    quote_server: bool,
) -> DatabaseError {
    let target = target.to_owned();
    match error {
        mysql_async::Error::Server(server) => {
            let detail = if quote_server {
                format!(
                    "error {} (SQLSTATE {}): {}",
                    server.code, server.state, server.message
                )
            } else {
                format!("error {} (SQLSTATE {})", server.code, server.state)
            };
            // 1045: access denied for the user; 1044: to the database; 1862: password expired.
            if what == "login" && matches!(server.code, 1044 | 1045 | 1862) {
                return DatabaseError::Rejected { target, detail };
            }
            // Too many connections, lock wait timeout, deadlock, server shutting down.
            let transient = matches!(server.code, 1040 | 1053 | 1205 | 1213 | 1317)
                || server.state.starts_with("08");
            DatabaseError::Server {
                target,
                what,
                detail,
                transient,
            }
        }
        mysql_async::Error::Io(mysql_async::IoError::Tls(tls)) => DatabaseError::Tls {
            target,
            detail: tls.to_string(),
        },
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => {
            let tls = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .map(ToString::to_string);
            match tls {
                Some(detail) => DatabaseError::Tls { target, detail },
                None => DatabaseError::Unreachable {
                    target,
                    detail: io.to_string(),
                },
            }
        }
        mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed) => {
            DatabaseError::Unreachable {
                target,
                detail: "the server closed the connection".into(),
            }
        }
        mysql_async::Error::Driver(driver) => DatabaseError::Server {
            target,
            what,
            detail: driver.to_string(),
            transient: false,
        },
        other => DatabaseError::Server {
            target,
            what,
            detail: other.to_string(),
            transient: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_rewritten_for_the_clone() {
        let rewrite = |grant: &str| rewrite_grant(grant, "app", "app_clone", "%");
        assert_eq!(
            rewrite("GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*AB'"),
            None
        );
        assert_eq!(
            rewrite("GRANT SELECT, INSERT ON `coffer_test`.* TO `app`@`%`").as_deref(),
            Some("GRANT SELECT, INSERT ON `coffer_test`.* TO `app_clone`@`%`")
        );
        assert_eq!(
            rewrite(
                "GRANT ALL PRIVILEGES ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*AB' WITH GRANT OPTION"
            )
            .as_deref(),
            Some("GRANT ALL PRIVILEGES ON *.* TO `app_clone`@`%` WITH GRANT OPTION")
        );
        assert_eq!(
            rewrite("GRANT `reader` TO `app`@`%`").as_deref(),
            Some("GRANT `reader` TO `app_clone`@`%`")
        );
        assert_eq!(
            rewrite("SET DEFAULT ROLE `reader` FOR `app`@`%`").as_deref(),
            Some("SET DEFAULT ROLE `reader` FOR `app_clone`@`%`")
        );
        assert_eq!(
            rewrite("GRANT SELECT ON `d`.* TO 'app'@'%'").as_deref(),
            Some("GRANT SELECT ON `d`.* TO 'app_clone'@'%'")
        );
    }

    #[test]
    fn unquotable_passwords_are_refused_without_showing_them() {
        for password in ["it's", "back\\slash", "new\nline"] {
            let error = password_literal(&SecretBytes::from_slice(password.as_bytes()))
                .unwrap_err()
                .to_string();
            assert!(!error.contains(password), "{error}");
        }
        assert_eq!(
            password_literal(&SecretBytes::from_slice(b"a-b_c!d")).unwrap(),
            "'a-b_c!d'"
        );
        assert!(quote_literal("o'neil").is_err());
    }
}
