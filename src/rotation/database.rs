//! What the `postgres` and `mysql` strategies share: their settings, the secret's JSON as AWS's
//! rotation functions read it, the alternating-users naming rule, TLS, and the four steps, which
//! each server carries out through [`Dialect`].
//!
//! The secret's value is a JSON object with `engine`, `host`, `port`, `username`, `password`,
//! `dbname` and, for alternating users, `masterarn`; the pending value is the current one with a
//! new password (and, for alternating users, the other user name), every other property kept.
//!
//! - `singleUser`: setSecret logs in with the current credentials and changes the user's own
//!   password; connections using the old password fail from then until clients read the new one.
//! - `alternatingUsers`: setSecret logs in with the master secret's credentials and sets the
//!   password of the user not in use (`<user>_clone` or `<user>`, in turn), creating the clone
//!   with the original's privileges the first time; the user in use keeps working meanwhile.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use serde_json::{Map, Value};
use zeroize::Zeroize;

use crate::crypto::SecretBytes;
use crate::engine::rotation::{
    RotationStrategy, SettingsError, Step, StepError, StepOutcome, StepRequest,
};
use crate::engine::secrets::{PasswordOptions, random_password};

/// What alternating users append to the original user's name (AWS's rule).
pub const CLONE_SUFFIX: &str = "_clone";
/// How long a connection may take to open, TLS and login included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one step's work with the server may take, so a hung server fails the step.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Characters never put in a generated password: they need quoting in SQL literals, connection
/// strings and URLs (AWS's rotation functions leave out the same ones).
pub const ALWAYS_EXCLUDED: &str = "/@\"'\\";

/// Why a database step failed. Never carries a password: server messages about statements that
/// hold one are left out (a syntax error may quote the statement).
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("{0}")]
    Value(String),
    #[error("cannot reach {target}: {detail}")]
    Unreachable { target: String, detail: String },
    #[error("{target} did not answer within {seconds} s")]
    Timeout { target: String, seconds: u64 },
    #[error("TLS with {target} failed: {detail}")]
    Tls { target: String, detail: String },
    #[error("{target} refused the login: {detail}")]
    Rejected { target: String, detail: String },
    #[error("{target}: {what} failed: {detail}")]
    Server {
        target: String,
        what: &'static str,
        detail: String,
        transient: bool,
    },
}

impl DatabaseError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            DatabaseError::Unreachable { .. } | DatabaseError::Timeout { .. } => true,
            DatabaseError::Server { transient, .. } => *transient,
            DatabaseError::Settings(_)
            | DatabaseError::Value(_)
            | DatabaseError::Tls { .. }
            | DatabaseError::Rejected { .. } => false,
        }
    }
}

/// How a secret is rotated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Variant {
    #[serde(rename = "singleUser")]
    SingleUser,
    #[serde(rename = "alternatingUsers")]
    AlternatingUsers,
}

/// How connections are protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum TlsMode {
    /// Plain TCP.
    #[serde(rename = "disable")]
    Disable,
    /// Encrypted, the server's certificate not checked.
    #[serde(rename = "require")]
    Require,
    /// Encrypted, the certificate checked against `caBundle` (else the system's roots) and
    /// the host name.
    #[serde(rename = "verifyFull")]
    VerifyFull,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSettings {
    variant: Option<Variant>,
    master_secret: Option<String>,
    tls: Option<TlsMode>,
    ca_bundle: Option<String>,
    password: Option<RawPassword>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPassword {
    password_length: Option<i64>,
    exclude_characters: Option<String>,
    #[serde(default)]
    exclude_numbers: bool,
    #[serde(default)]
    exclude_punctuation: bool,
    #[serde(default)]
    exclude_uppercase: bool,
    #[serde(default)]
    exclude_lowercase: bool,
    #[serde(default)]
    include_space: bool,
    require_each_included_type: Option<bool>,
}

/// The settings of a `postgres` or `mysql` rotation.
#[derive(Clone, Debug)]
pub struct Settings {
    pub variant: Variant,
    pub master_secret: Option<String>,
    pub tls: Tls,
    /// Whether the settings named the TLS mode; if not, the value's `tls` property may (a
    /// rotation set through RotateSecret has no settings of its own).
    pub tls_named: bool,
    pub password: PasswordOptions,
}

/// TLS as the settings ask: the mode and, for `verifyFull`, the CA certificates (none: the
/// system's roots).
#[derive(Clone, Debug)]
pub struct Tls {
    pub mode: TlsMode,
    pub ca: Vec<CertificateDer<'static>>,
}

impl Settings {
    /// Parses settings; `null` (none given) takes every default: single user, `verifyFull`
    /// against the system's roots, 32-character passwords.
    pub fn parse(value: &Value) -> Result<Settings, DatabaseError> {
        let raw: RawSettings = if value.is_null() {
            RawSettings {
                variant: None,
                master_secret: None,
                tls: None,
                ca_bundle: None,
                password: None,
            }
        } else {
            RawSettings::deserialize(value).map_err(|e| DatabaseError::Settings(e.to_string()))?
        };
        let tls_named = raw.tls.is_some();
        let mode = raw.tls.unwrap_or(TlsMode::VerifyFull);
        let ca = match raw.ca_bundle.as_deref() {
            None => Vec::new(),
            Some(_) if mode != TlsMode::VerifyFull => {
                return Err(DatabaseError::Settings(
                    "caBundle applies only to tls: verifyFull".into(),
                ));
            }
            Some(bundle) => parse_ca_bundle(bundle)?,
        };
        let password = raw.password.unwrap_or_default();
        let mut excluded = password.exclude_characters.unwrap_or_default();
        excluded.push_str(ALWAYS_EXCLUDED);
        let options = PasswordOptions {
            length: password.password_length,
            exclude_characters: Some(excluded),
            exclude_numbers: password.exclude_numbers,
            exclude_punctuation: password.exclude_punctuation,
            exclude_uppercase: password.exclude_uppercase,
            exclude_lowercase: password.exclude_lowercase,
            include_space: password.include_space,
            require_each_included_type: password.require_each_included_type,
        };
        // The options are checked now rather than at the first rotation.
        random_password(&options).map_err(|e| DatabaseError::Settings(format!("password: {e}")))?;
        let master_secret = raw.master_secret.filter(|name| !name.is_empty());
        Ok(Settings {
            variant: raw.variant.unwrap_or(Variant::SingleUser),
            master_secret,
            tls: Tls { mode, ca },
            tls_named,
            password: options,
        })
    }
}

fn parse_ca_bundle(bundle: &str) -> Result<Vec<CertificateDer<'static>>, DatabaseError> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(bundle.trim())
        .map_err(|_| DatabaseError::Settings("caBundle is not base64".into()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| DatabaseError::Settings("caBundle is not PEM certificates".into()))?;
    if certs.is_empty() {
        return Err(DatabaseError::Settings(
            "caBundle holds no certificate".into(),
        ));
    }
    Ok(certs)
}

/// A database strategy: the steps of [`run_step`] in one server's [`Dialect`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DatabaseStrategy<D>(D);

impl<D> DatabaseStrategy<D> {
    pub fn of(dialect: D) -> Self {
        Self(dialect)
    }
}

#[async_trait::async_trait]
impl<D: Dialect + 'static> RotationStrategy for DatabaseStrategy<D> {
    fn name(&self) -> &'static str {
        D::NAME
    }

    fn check_settings(&self, settings: &Value) -> Result<(), SettingsError> {
        check_settings(settings)
    }

    fn referenced_secret(&self, settings: &Value, current: Option<&SecretBytes>) -> Option<String> {
        referenced_secret(settings, current)
    }

    async fn run(&self, request: StepRequest<'_>) -> Result<StepOutcome, StepError> {
        run_step(&self.0, request).await
    }
}

/// [`crate::engine::rotation::RotationStrategy::check_settings`] for both strategies.
pub fn check_settings(settings: &Value) -> Result<(), SettingsError> {
    Settings::parse(settings)
        .map(drop)
        .map_err(|e| SettingsError(e.to_string()))
}

/// [`crate::engine::rotation::RotationStrategy::referenced_secret`] for both strategies: the
/// master secret of alternating users, from the settings, else the value's `masterarn`.
pub fn referenced_secret(settings: &Value, current: Option<&SecretBytes>) -> Option<String> {
    let settings = Settings::parse(settings).ok()?;
    if settings.variant != Variant::AlternatingUsers {
        return None;
    }
    if let Some(name) = settings.master_secret {
        return Some(name);
    }
    let document = Document::parse(current?).ok()?;
    document
        .string("masterarn")
        .ok()
        .flatten()
        .filter(|name| !name.is_empty())
}

/// A secret's JSON object, wiped when dropped (it holds a password).
pub struct Document(Map<String, Value>);

impl Drop for Document {
    fn drop(&mut self) {
        for (_, value) in self.0.iter_mut() {
            wipe(value);
        }
    }
}

fn wipe(value: &mut Value) {
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => map.iter_mut().for_each(|(_, item)| wipe(item)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

impl Document {
    pub fn parse(value: &SecretBytes) -> Result<Document, DatabaseError> {
        match serde_json::from_slice::<Value>(value.expose()) {
            Ok(Value::Object(map)) => Ok(Document(map)),
            Ok(mut other) => {
                wipe(&mut other);
                Err(DatabaseError::Value(
                    "the secret's value is not a JSON object".into(),
                ))
            }
            // serde_json's message gives only a line and column, never the text.
            Err(e) => Err(DatabaseError::Value(format!(
                "the secret's value is not JSON ({e})"
            ))),
        }
    }

    /// A string property, `None` when absent or null.
    fn string(&self, key: &str) -> Result<Option<String>, DatabaseError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(DatabaseError::Value(format!(
                "the secret's `{key}` is not a string"
            ))),
        }
    }

    fn required(&self, key: &str) -> Result<String, DatabaseError> {
        self.string(key)?
            .filter(|text| !text.is_empty())
            .ok_or_else(|| DatabaseError::Value(format!("the secret has no `{key}`")))
    }

    fn password(&self) -> Result<SecretBytes, DatabaseError> {
        match self.0.get("password") {
            Some(Value::String(text)) if !text.is_empty() => {
                Ok(SecretBytes::from_slice(text.as_bytes()))
            }
            Some(Value::String(_)) | None | Some(Value::Null) => {
                Err(DatabaseError::Value("the secret has no `password`".into()))
            }
            Some(_) => Err(DatabaseError::Value(
                "the secret's `password` is not a string".into(),
            )),
        }
    }

    /// `port` as a number or a string of digits (AWS's functions accept both).
    fn port(&self) -> Result<Option<u16>, DatabaseError> {
        let invalid = || DatabaseError::Value("the secret's `port` is not a TCP port".into());
        match self.0.get("port") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(number)) => number
                .as_u64()
                .and_then(|port| u16::try_from(port).ok())
                .filter(|port| *port != 0)
                .map(Some)
                .ok_or_else(invalid),
            Some(Value::String(text)) => text
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .map(Some)
                .ok_or_else(invalid),
            Some(_) => Err(invalid()),
        }
    }

    pub fn username(&self) -> Result<String, DatabaseError> {
        self.required("username")
    }

    /// This document with another user name and password, every other property kept.
    fn with_credentials(&self, username: &str, password: &SecretBytes) -> SecretBytes {
        let mut map = self.0.clone();
        let text = String::from_utf8_lossy(password.expose()).into_owned();
        map.insert("username".into(), Value::String(username.to_owned()));
        if let Some(mut old) = map.insert("password".into(), Value::String(text)) {
            wipe(&mut old);
        }
        let document = Document(map);
        SecretBytes::new(serde_json::to_vec(&document.0).unwrap_or_default())
    }
}

/// Where and as whom to log in.
pub struct Login {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: SecretBytes,
    pub dbname: Option<String>,
}

impl Login {
    /// From a secret's value; `default_port` when it names none.
    pub fn from_document(document: &Document, default_port: u16) -> Result<Login, DatabaseError> {
        let host = document.required("host")?;
        check_host(&host)?;
        Ok(Login {
            host,
            port: document.port()?.unwrap_or(default_port),
            username: document.username()?,
            password: document.password()?,
            dbname: document.string("dbname")?.filter(|name| !name.is_empty()),
        })
    }

    /// `user@host:port`, for messages.
    pub fn target(&self) -> String {
        format!("{}@{}:{}", self.username, self.host, self.port)
    }
}

/// A host name or address: a path would reach a local socket of the controller instead.
fn check_host(host: &str) -> Result<(), DatabaseError> {
    if host.contains(['/', '\\']) || host.chars().any(char::is_whitespace) {
        return Err(DatabaseError::Value(format!(
            "the secret's `host` {host:?} is not a host name or address"
        )));
    }
    Ok(())
}

/// The master credentials of alternating users. The master secret may name no host (RDS's own
/// master secrets hold only a user name and password): the user's then. When it names one, it
/// must be the user's, so that whoever may write the user's secret cannot send the master
/// password to another server.
fn master_login(master: &SecretBytes, user: &Login) -> Result<Login, DatabaseError> {
    let in_master = |e: DatabaseError| match e {
        DatabaseError::Value(reason) => DatabaseError::Value(format!("master secret: {reason}")),
        other => other,
    };
    let document = Document::parse(master).map_err(in_master)?;
    let host = document.string("host").map_err(in_master)?;
    if let Some(host) = host.as_deref().filter(|host| !host.is_empty())
        && !host.eq_ignore_ascii_case(&user.host)
    {
        return Err(DatabaseError::Value(format!(
            "the master secret's host {host} is not the user's host {}",
            user.host
        )));
    }
    Ok(Login {
        host: user.host.clone(),
        port: document.port().map_err(in_master)?.unwrap_or(user.port),
        username: document.username().map_err(in_master)?,
        password: document.password().map_err(in_master)?,
        dbname: document
            .string("dbname")
            .map_err(in_master)?
            .filter(|name| !name.is_empty())
            .or_else(|| user.dbname.clone()),
    })
}

/// The other user of alternating users: `<user>_clone` for `<user>`, and back.
pub fn alternate_username(username: &str) -> String {
    match original_username(username) {
        original if original.len() < username.len() => original.to_owned(),
        _ => format!("{username}{CLONE_SUFFIX}"),
    }
}

/// The user a clone was made from (the user itself when it is not a clone).
pub fn original_username(username: &str) -> &str {
    username
        .strip_suffix(CLONE_SUFFIX)
        .filter(|original| !original.is_empty())
        .unwrap_or(username)
}

/// Replaces every occurrence of the given secrets in a message: a last guard, should a driver
/// or server ever quote one.
pub fn redact(mut message: String, secrets: &[SecretBytes]) -> String {
    for secret in secrets {
        if let Ok(text) = std::str::from_utf8(secret.expose())
            && text.len() >= 4
            && message.contains(text)
        {
            message = message.replace(text, "[redacted]");
        }
    }
    message
}

/// What a server does for the steps; connections follow `tls`, and every error names the
/// server and user but never a password.
#[async_trait]
pub trait Dialect: Send + Sync {
    /// The strategy's name.
    const NAME: &'static str;

    /// The port when the secret names none.
    const DEFAULT_PORT: u16;

    /// Logs in and runs `SELECT 1`.
    async fn check_login(&self, login: &Login, tls: &Tls) -> Result<(), DatabaseError>;

    /// Logs in as `login` and changes that user's own password to `new`.
    async fn set_own_password(
        &self,
        login: &Login,
        new: &SecretBytes,
        tls: &Tls,
    ) -> Result<(), DatabaseError>;

    /// Logs in as `master` and sets `username`'s password to `new`; when `username` is not
    /// `original` and does not exist, creates it with `original`'s privileges first.
    async fn set_user_password(
        &self,
        master: &Login,
        username: &str,
        original: &str,
        new: &SecretBytes,
        tls: &Tls,
    ) -> Result<(), DatabaseError>;
}

/// Runs `work` under [`STEP_TIMEOUT`].
pub async fn bounded<T>(
    target: &str,
    work: impl Future<Output = Result<T, DatabaseError>>,
) -> Result<T, DatabaseError> {
    tokio::time::timeout(STEP_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(DatabaseError::Timeout {
                target: target.to_owned(),
                seconds: STEP_TIMEOUT.as_secs(),
            })
        })
}

/// One step of a `postgres` or `mysql` rotation.
pub async fn run_step<D: Dialect>(
    dialect: &D,
    request: StepRequest<'_>,
) -> Result<StepOutcome, StepError> {
    let step = request.step;
    step_work(dialect, &request).await.map_err(|e| {
        let passwords: Vec<SecretBytes> = [request.current, request.pending, request.referenced]
            .into_iter()
            .flatten()
            .filter_map(|value| Document::parse(value).ok()?.password().ok())
            .collect();
        let reason = redact(e.to_string(), &passwords);
        if e.is_transient() {
            StepError::transient(step, reason)
        } else {
            StepError::permanent(step, reason)
        }
    })
}

async fn step_work<D: Dialect>(
    dialect: &D,
    request: &StepRequest<'_>,
) -> Result<StepOutcome, DatabaseError> {
    let mut settings = Settings::parse(request.settings)?;
    if !settings.tls_named
        && let Some(current) = request.current
        && let Some(mode) = Document::parse(current)?.string("tls")?
    {
        settings.tls.mode =
            serde_json::from_value(Value::String(mode.to_string())).map_err(|_| {
                DatabaseError::Value(
                    "the value's `tls` must be disable, require or verifyFull".into(),
                )
            })?;
    }
    let current = || {
        request.current.ok_or_else(|| {
            DatabaseError::Value("the secret has no current value to rotate from".into())
        })
    };
    let pending = || {
        request.pending.ok_or_else(|| {
            DatabaseError::Value("the rotation has no pending value (createSecret)".into())
        })
    };
    match request.step {
        Step::CreateSecret => {
            // Nothing changes in the database here: the engine stores the value first.
            let document = Document::parse(current()?)?;
            // The current value must be usable before a new one is made from it.
            let login = Login::from_document(&document, D::DEFAULT_PORT)?;
            let username = match settings.variant {
                Variant::SingleUser => login.username.clone(),
                Variant::AlternatingUsers => alternate_username(&login.username),
            };
            let password = random_password(&settings.password)
                .map_err(|e| DatabaseError::Settings(format!("password: {e}")))?;
            Ok(StepOutcome::Pending(
                document.with_credentials(&username, &password),
            ))
        }
        Step::SetSecret => {
            let pending = Login::from_document(&Document::parse(pending()?)?, D::DEFAULT_PORT)?;
            let current = Login::from_document(&Document::parse(current()?)?, D::DEFAULT_PORT)?;
            match settings.variant {
                Variant::SingleUser => set_single(dialect, &current, &pending, &settings.tls).await,
                Variant::AlternatingUsers => {
                    let master = request.referenced.ok_or_else(|| {
                        DatabaseError::Value(
                            "alternating users need a master secret (settings.masterSecret or \
                             the value's masterarn) that exists in the namespace"
                                .into(),
                        )
                    })?;
                    let master = master_login(master, &pending)?;
                    // Already done by an earlier run (setting the same password again could
                    // break a password-reuse policy). The clone can log in only once it has the
                    // original's privileges, so nothing is left half made.
                    if bounded(
                        &pending.target(),
                        dialect.check_login(&pending, &settings.tls),
                    )
                    .await
                    .is_ok()
                    {
                        return Ok(StepOutcome::Done);
                    }
                    let original = original_username(&pending.username).to_owned();
                    let target = master.target();
                    bounded(
                        &target,
                        dialect.set_user_password(
                            &master,
                            &pending.username,
                            &original,
                            &pending.password,
                            &settings.tls,
                        ),
                    )
                    .await
                }
            }?;
            Ok(StepOutcome::Done)
        }
        Step::TestSecret => {
            let pending = Login::from_document(&Document::parse(pending()?)?, D::DEFAULT_PORT)?;
            bounded(
                &pending.target(),
                dialect.check_login(&pending, &settings.tls),
            )
            .await?;
            Ok(StepOutcome::Done)
        }
        // AWSCURRENT moves in the engine; the database has nothing left to do.
        Step::FinishSecret => Ok(StepOutcome::Done),
    }
}

/// Single user: the user changes its own password, logged in with the current one. When that
/// login is refused but the pending password works, an earlier run already did it.
async fn set_single<D: Dialect>(
    dialect: &D,
    current: &Login,
    pending: &Login,
    tls: &Tls,
) -> Result<(), DatabaseError> {
    if current.username != pending.username {
        return Err(DatabaseError::Value(format!(
            "single user: the pending value's user {} is not the current {}",
            pending.username, current.username
        )));
    }
    let target = current.target();
    match bounded(
        &target,
        dialect.set_own_password(current, &pending.password, tls),
    )
    .await
    {
        Err(refused @ DatabaseError::Rejected { .. }) => {
            match bounded(&target, dialect.check_login(pending, tls)).await {
                Ok(()) => Ok(()),
                Err(_) => Err(refused),
            }
        }
        other => other,
    }
}

/// A TLS client configuration as `tls` asks (`None` for `disable`), on the ring provider.
pub fn client_config(
    tls: &Tls,
    target: &str,
) -> Result<Option<rustls::ClientConfig>, DatabaseError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let failed = |e: rustls::Error| DatabaseError::Tls {
        target: target.to_owned(),
        detail: e.to_string(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(failed)?;
    let config = match tls.mode {
        TlsMode::Disable => return Ok(None),
        TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        TlsMode::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = if tls.ca.is_empty() {
                system_roots()
            } else {
                tls.ca.as_slice()
            };
            roots.add_parsable_certificates(certs.iter().cloned());
            if roots.is_empty() {
                return Err(DatabaseError::Tls {
                    target: target.to_owned(),
                    detail: "no CA certificates to verify against (set caBundle)".into(),
                });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(config))
}

/// The system's CA certificates, read once.
pub fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// `require`: any certificate, as libpq's `sslmode=require` does; the handshake's signatures
/// are still checked, so the session key is the server's.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn secret(value: Value) -> SecretBytes {
        SecretBytes::new(serde_json::to_vec(&value).unwrap())
    }

    #[test]
    fn alternating_names_toggle() {
        assert_eq!(alternate_username("app"), "app_clone");
        assert_eq!(alternate_username("app_clone"), "app");
        assert_eq!(alternate_username("_clone"), "_clone_clone");
        assert_eq!(original_username("app_clone"), "app");
        assert_eq!(original_username("app"), "app");
    }

    #[test]
    fn settings_default_and_refuse() {
        let settings = Settings::parse(&Value::Null).unwrap();
        assert_eq!(settings.variant, Variant::SingleUser);
        assert_eq!(settings.tls.mode, TlsMode::VerifyFull);
        let settings = Settings::parse(&json!({
            "variant": "alternatingUsers", "masterSecret": "master", "tls": "require",
            "password": {"passwordLength": 20, "excludePunctuation": true}
        }))
        .unwrap();
        assert_eq!(settings.variant, Variant::AlternatingUsers);
        assert_eq!(settings.master_secret.as_deref(), Some("master"));
        assert!(check_settings(&json!({"variant": "both"})).is_err());
        assert!(check_settings(&json!({"tls": "require", "caBundle": "eA=="})).is_err());
        assert!(check_settings(&json!({"caBundle": "not base64!"})).is_err());
        assert!(check_settings(&json!({"password": {"passwordLength": 0}})).is_err());
        assert!(check_settings(&json!({"varient": "singleUser"})).is_err());
    }

    #[test]
    fn generated_passwords_leave_out_quoting_characters() {
        let settings = Settings::parse(&json!({"password": {"passwordLength": 400}})).unwrap();
        let password = random_password(&settings.password).unwrap();
        assert!(!password.expose().iter().any(|c| b"/@\"'\\".contains(c)));
    }

    #[test]
    fn the_master_secret_comes_from_settings_or_the_value() {
        let current = secret(json!({"username": "u", "masterarn": "arn:master"}));
        let alternating = json!({"variant": "alternatingUsers"});
        assert_eq!(
            referenced_secret(&alternating, Some(&current)).as_deref(),
            Some("arn:master")
        );
        let named = json!({"variant": "alternatingUsers", "masterSecret": "m"});
        assert_eq!(
            referenced_secret(&named, Some(&current)).as_deref(),
            Some("m")
        );
        assert_eq!(referenced_secret(&json!({}), Some(&current)), None);
    }

    #[test]
    fn the_pending_value_keeps_every_other_property() {
        let current = secret(json!({
            "engine": "postgres", "host": "db", "port": "5432", "username": "app",
            "password": "old", "dbname": "d", "masterarn": "m", "extra": {"k": 1}
        }));
        let document = Document::parse(&current).unwrap();
        let pending = document.with_credentials("app_clone", &SecretBytes::from_slice(b"new"));
        let value: Value = serde_json::from_slice(pending.expose()).unwrap();
        assert_eq!(
            value,
            json!({
                "engine": "postgres", "host": "db", "port": "5432", "username": "app_clone",
                "password": "new", "dbname": "d", "masterarn": "m", "extra": {"k": 1}
            })
        );
        let login = Login::from_document(&Document::parse(&pending).unwrap(), 1).unwrap();
        assert_eq!(login.port, 5432);
        assert_eq!(login.target(), "app_clone@db:5432");
    }

    #[test]
    fn values_are_checked_without_quoting_them() {
        for (value, wanted) in [
            (json!(["x"]), "not a JSON object"),
            (json!({"host": "h", "username": "u"}), "no `password`"),
            (
                json!({"host": "/run/socket", "username": "u", "password": "p4ssw0rd"}),
                "not a host",
            ),
            (
                json!({"host": "h", "port": 70000, "username": "u", "password": "p4ssw0rd"}),
                "port",
            ),
        ] {
            let error = Document::parse(&secret(value))
                .and_then(|document| Login::from_document(&document, 1).map(drop))
                .unwrap_err();
            assert!(error.to_string().contains(wanted), "{error}");
            assert!(!error.is_transient());
        }
        let error = Document::parse(&SecretBytes::from_slice(b"{\"password\": \"s3cret-value"))
            .err()
            .unwrap();
        assert!(!error.to_string().contains("s3cret"));
    }

    #[test]
    fn a_master_secret_for_another_host_is_refused() {
        let user = Login {
            host: "db".into(),
            port: 5432,
            username: "app".into(),
            password: SecretBytes::from_slice(b"p"),
            dbname: Some("d".into()),
        };
        let master = secret(json!({"username": "admin", "password": "m", "host": "evil"}));
        assert!(master_login(&master, &user).is_err());
        let master = secret(json!({"username": "admin", "password": "m"}));
        let login = master_login(&master, &user).unwrap();
        assert_eq!(login.target(), "admin@db:5432");
        assert_eq!(login.dbname.as_deref(), Some("d"));
    }

    /// A server whose logins work only with `accepted`, and whose errors quote the password
    /// they were given (as no real one should).
    struct Fake {
        accepted: &'static str,
    }

    #[async_trait]
    impl Dialect for Fake {
        const NAME: &'static str = "fake";
        const DEFAULT_PORT: u16 = 1;

        async fn check_login(&self, login: &Login, _tls: &Tls) -> Result<(), DatabaseError> {
            if login.password.expose() == self.accepted.as_bytes() {
                return Ok(());
            }
            Err(DatabaseError::Rejected {
                target: login.target(),
                detail: format!(
                    "{} is wrong",
                    String::from_utf8_lossy(login.password.expose())
                ),
            })
        }

        async fn set_own_password(
            &self,
            login: &Login,
            _new: &SecretBytes,
            tls: &Tls,
        ) -> Result<(), DatabaseError> {
            self.check_login(login, tls).await
        }

        async fn set_user_password(
            &self,
            master: &Login,
            _username: &str,
            _original: &str,
            _new: &SecretBytes,
            tls: &Tls,
        ) -> Result<(), DatabaseError> {
            self.check_login(master, tls).await
        }
    }

    async fn set_secret(fake: &Fake, current: &str, pending: &str) -> Result<(), StepError> {
        let value =
            |password: &str| secret(json!({"host": "db", "username": "app", "password": password}));
        let (current, pending) = (value(current), value(pending));
        run_step(
            fake,
            StepRequest {
                step: Step::SetSecret,
                secret_id: "arn",
                namespace: "default",
                name: "db",
                token: "t",
                settings: &json!({"tls": "disable"}),
                current: Some(&current),
                pending: Some(&pending),
                referenced: None,
                attempt: 0,
            },
        )
        .await
        .map(drop)
    }

    #[tokio::test]
    async fn single_user_set_secret_is_done_when_the_pending_password_works() {
        let fake = Fake {
            accepted: "Pending-1",
        };
        set_secret(&fake, "Current-1", "Pending-1").await.unwrap();
        let fake = Fake {
            accepted: "Current-1",
        };
        set_secret(&fake, "Current-1", "Pending-1").await.unwrap();
    }

    #[tokio::test]
    async fn step_errors_never_quote_a_password() {
        let fake = Fake { accepted: "other" };
        let error = set_secret(&fake, "Current-2", "Pending-2")
            .await
            .unwrap_err();
        assert!(!error.reason.contains("Current-2"), "{}", error.reason);
        assert!(
            error.reason.contains("[redacted] is wrong"),
            "{}",
            error.reason
        );
        assert!(error.reason.contains("app@db:1"), "{}", error.reason);
        assert!(!error.retryable);
    }

    #[test]
    fn redaction_removes_secrets() {
        let secret = SecretBytes::from_slice(b"hunter2hunter2");
        assert_eq!(
            redact("bad hunter2hunter2 here".into(), &[secret]),
            "bad [redacted] here"
        );
    }
}
