//! Coffer's container-credentials endpoint (docs/wire.md, "Container credentials"): a pod
//! exchanges its ServiceAccount token for temporary SigV4 credentials, the way the AWS SDKs
//! already do with `AWS_CONTAINER_CREDENTIALS_FULL_URI` and
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
//!
//! `GET /v1/credentials` with `Authorization: <token>` (a `Bearer ` prefix is tolerated) reviews
//! the token with TokenReview and answers
//! `{"AccessKeyId","SecretAccessKey","Token","Expiration"}`.
//!
//! # Stateless credentials
//!
//! Temporary credentials must verify on any replica, with nothing shared but the root keyring, so
//! everything needed to check them travels in the session token itself:
//!
//! - `AccessKeyId`: `ASIA` and 16 base32 characters, random.
//! - `SecretAccessKey`: 40 random characters of the base64 alphabet.
//! - `Token` (the session token): unpadded URL-safe base64 of
//!   `0x01 || RootKeyring::wrap(aad, claims)`, where `claims` is the JSON object
//!   `{"akid","sk","ns","sa","uid","iat","exp"}` (access key id, secret access key, the
//!   ServiceAccount's namespace, name and uid, issue and expiry time in Unix seconds) and
//!   `aad = "coffer/session-token/v1/" || access key id`. The root wrap is AES-256-SIV
//!   ([`crate::crypto::wrap_key`]) under the current root key version, which it names in its first
//!   four bytes, so tokens sealed before a root key rotation still open while the old version is
//!   in the keyring. The associated data gives session tokens their own domain under the root key
//!   (nothing else wraps with that prefix) and binds each token to its access key id.
//! - `Expiration`: RFC 3339 UTC, [`DEFAULT_LIFETIME`] after issue unless configured, and never
//!   later than the ServiceAccount token's own `exp`.
//!
//! [`TemporaryCredentialAuthenticator`] opens the session token presented with a signed request,
//! checks that it names the request's access key id and has not expired, and hands the front end
//! the secret to verify the signature with, once it has seen that the ServiceAccount still exists
//! with the uid the token names (looked up, and cached for seconds): credentials die with their
//! ServiceAccount, and one re-created under the same name does not inherit them. Authorization is
//! asked of RBAC on every call (cached for seconds), so removing a ServiceAccount's permissions
//! takes effect at once.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use super::AwsError;
use super::identity::{Authenticator, generate_access_key};
use super::kube_identity::{
    ServiceAccountDirectory, ServiceAccountIdentity, TokenReviewer, token_expiry,
};
use crate::crypto::{CryptoError, RootKeyring, SecretBytes};
use crate::engine::{Caller, Clock, SystemClock};

/// The path of the endpoint.
pub const CREDENTIALS_PATH: &str = "/v1/credentials";

/// How long issued credentials last unless configured otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// The shortest configurable lifetime: the AWS SDKs refresh credentials that have less than 15
/// minutes left, so shorter ones would be fetched again on every call.
pub const MIN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The longest configurable lifetime, as for AWS role sessions.
pub const MAX_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// Session tokens longer than this are not opened.
pub const MAX_SESSION_TOKEN_LEN: usize = 4096;

const TOKEN_FORMAT: u8 = 1;
const TOKEN_AAD_PREFIX: &[u8] = b"coffer/session-token/v1/";
const TEMPORARY_KEY_PREFIX: &str = "ASIA";
const ACCESS_KEY_ID_LEN: usize = 20;

/// Everything that can go wrong in this module. No message carries a token or a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// A configured lifetime outside [`MIN_LIFETIME`]..=[`MAX_LIFETIME`].
    #[error(
        "the credential lifetime must be between {} and {} seconds",
        MIN_LIFETIME.as_secs(),
        MAX_LIFETIME.as_secs()
    )]
    InvalidLifetime,

    /// The credentials would expire before they are issued (the ServiceAccount token has
    /// expired), or at a time that cannot be represented.
    #[error("the credentials would expire at an invalid time")]
    InvalidExpiry,

    /// Encoding the session token's claims failed.
    #[error("encoding the session token failed")]
    Encoding,

    /// Sealing the session token failed.
    #[error("sealing the session token failed: {0}")]
    Seal(#[source] CryptoError),
}

/// A freshly issued set of temporary credentials.
pub struct IssuedCredentials {
    /// `ASIA` and 16 base32 characters.
    pub access_key_id: String,
    /// 40 characters.
    pub secret_access_key: SecretBytes,
    /// The sealed session token (ASCII).
    pub session_token: SecretBytes,
    /// Expiry, in seconds since the Unix epoch.
    pub expiration: i64,
}

impl IssuedCredentials {
    /// The expiry as RFC 3339 in UTC, such as `2026-11-28T10:00:00Z`.
    pub fn expiration_rfc3339(&self) -> Result<String, CredentialsError> {
        rfc3339(self.expiration)
    }
}

impl fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .field("expiration", &self.expiration)
            .finish()
    }
}

fn rfc3339(seconds: i64) -> Result<String, CredentialsError> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .ok_or(CredentialsError::InvalidExpiry)
}

/// What a session token seals. Field names are short: the token travels on every request.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionClaims<'a> {
    #[serde(rename = "akid")]
    access_key_id: &'a str,
    #[serde(rename = "sk")]
    secret: &'a str,
    #[serde(rename = "ns")]
    namespace: &'a str,
    #[serde(rename = "sa")]
    name: &'a str,
    uid: &'a str,
    #[serde(rename = "iat")]
    issued: i64,
    #[serde(rename = "exp")]
    expiration: i64,
}

/// A session token opened and found to belong to its access key id; not yet checked for expiry.
pub struct SessionGrant {
    pub secret_access_key: SecretBytes,
    pub identity: ServiceAccountIdentity,
    /// Expiry, in seconds since the Unix epoch.
    pub expiration: i64,
}

impl fmt::Debug for SessionGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionGrant")
            .field("secret_access_key", &self.secret_access_key)
            .field("identity", &self.identity)
            .field("expiration", &self.expiration)
            .finish()
    }
}

fn token_aad(access_key_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(TOKEN_AAD_PREFIX.len() + access_key_id.len());
    aad.extend_from_slice(TOKEN_AAD_PREFIX);
    aad.extend_from_slice(access_key_id.as_bytes());
    aad
}

fn is_temporary_key_id(access_key_id: &str) -> bool {
    access_key_id.len() == ACCESS_KEY_ID_LEN
        && access_key_id.starts_with(TEMPORARY_KEY_PREFIX)
        && access_key_id
            .bytes()
            .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c))
}

/// Issues and opens stateless temporary credentials under the root keyring.
pub struct TemporaryCredentials {
    keyring: Arc<RootKeyring>,
    lifetime: Duration,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for TemporaryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemporaryCredentials")
            .field("keyring", &self.keyring)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl TemporaryCredentials {
    /// Credentials lasting [`DEFAULT_LIFETIME`], on the system clock.
    pub fn new(keyring: Arc<RootKeyring>) -> Self {
        Self {
            keyring,
            lifetime: DEFAULT_LIFETIME,
            clock: Arc::new(SystemClock),
        }
    }

    /// Sets how long issued credentials last, between [`MIN_LIFETIME`] and [`MAX_LIFETIME`].
    pub fn with_lifetime(mut self, lifetime: Duration) -> Result<Self, CredentialsError> {
        if !(MIN_LIFETIME..=MAX_LIFETIME).contains(&lifetime) {
            return Err(CredentialsError::InvalidLifetime);
        }
        self.lifetime = lifetime;
        Ok(self)
    }

    /// Sets the clock that the endpoint and the authenticator read.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long issued credentials last.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Issues credentials for `identity` at `now` (Unix seconds), lasting the configured
    /// lifetime.
    pub fn issue(
        &self,
        identity: &ServiceAccountIdentity,
        now: i64,
    ) -> Result<IssuedCredentials, CredentialsError> {
        self.issue_until(identity, now, None)
    }

    /// Issues credentials for `identity` at `now`, lasting the configured lifetime but expiring
    /// no later than `not_after` (the ServiceAccount token's expiry, when known).
    pub fn issue_until(
        &self,
        identity: &ServiceAccountIdentity,
        now: i64,
        not_after: Option<i64>,
    ) -> Result<IssuedCredentials, CredentialsError> {
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX);
        let mut expiration = now.saturating_add(lifetime);
        if let Some(not_after) = not_after {
            expiration = expiration.min(not_after);
        }
        if expiration <= now {
            return Err(CredentialsError::InvalidExpiry);
        }
        // Refuse now what could not be written as Expiration later.
        rfc3339(expiration)?;

        let key = generate_access_key();
        let suffix = key
            .id
            .get(TEMPORARY_KEY_PREFIX.len()..)
            .ok_or(CredentialsError::Encoding)?;
        let access_key_id = format!("{TEMPORARY_KEY_PREFIX}{suffix}");
        let secret =
            std::str::from_utf8(key.secret.expose()).map_err(|_| CredentialsError::Encoding)?;
        let claims = SessionClaims {
            access_key_id: &access_key_id,
            secret,
            namespace: &identity.namespace,
            name: &identity.name,
            uid: &identity.uid,
            issued: now,
            expiration,
        };
        // Sized so that writing never reallocates and leaves an unwiped copy of the secret
        // behind (JSON escaping grows a string at most sixfold).
        let capacity = 160
            + 6 * (access_key_id.len()
                + secret.len()
                + identity.namespace.len()
                + identity.name.len()
                + identity.uid.len());
        let mut plain = Zeroizing::new(Vec::with_capacity(capacity));
        serde_json::to_writer(&mut *plain, &claims).map_err(|_| CredentialsError::Encoding)?;
        let wrapped = self
            .keyring
            .wrap(&token_aad(&access_key_id), &plain)
            .map_err(CredentialsError::Seal)?;
        let mut sealed = Vec::with_capacity(1 + wrapped.len());
        sealed.push(TOKEN_FORMAT);
        sealed.extend_from_slice(&wrapped);
        let session_token = SecretBytes::new(URL_SAFE_NO_PAD.encode(&sealed).into_bytes());

        Ok(IssuedCredentials {
            access_key_id,
            secret_access_key: key.secret,
            session_token,
            expiration,
        })
    }

    /// Opens `session_token` presented with `access_key_id`. `None` unless the token was sealed
    /// by this keyring (any version it still holds) for exactly that access key id. Expiry is
    /// not checked here.
    pub fn open(&self, access_key_id: &str, session_token: &str) -> Option<SessionGrant> {
        if !is_temporary_key_id(access_key_id) || session_token.len() > MAX_SESSION_TOKEN_LEN {
            return None;
        }
        let sealed = URL_SAFE_NO_PAD.decode(session_token).ok()?;
        let (&format, wrapped) = sealed.split_first()?;
        if format != TOKEN_FORMAT {
            return None;
        }
        let plain = match self.keyring.unwrap(&token_aad(access_key_id), wrapped) {
            Ok(plain) => plain,
            Err(CryptoError::UnknownRootKeyVersion(version)) => {
                tracing::debug!(
                    version,
                    "session token sealed under a root key version no longer held"
                );
                return None;
            }
            Err(_) => return None,
        };
        let claims: SessionClaims<'_> = serde_json::from_slice(plain.expose()).ok()?;
        if claims.access_key_id != access_key_id {
            return None;
        }
        Some(SessionGrant {
            secret_access_key: SecretBytes::from_slice(claims.secret.as_bytes()),
            identity: ServiceAccountIdentity {
                namespace: claims.namespace.to_owned(),
                name: claims.name.to_owned(),
                uid: claims.uid.to_owned(),
            },
            expiration: claims.expiration,
        })
    }
}

/// Authenticates requests signed with credentials from [`TemporaryCredentials`]: the session
/// token must be present, open under the root keyring, name the request's access key id and be
/// unexpired. Anything else is an unknown key (`Ok(None)`), except an expired token, which is
/// `ExpiredTokenException`.
#[derive(Debug)]
pub struct TemporaryCredentialAuthenticator {
    credentials: Arc<TemporaryCredentials>,
    accounts: Arc<dyn ServiceAccountDirectory>,
}

impl TemporaryCredentialAuthenticator {
    /// Accepts credentials from `credentials` while the ServiceAccount they were issued to still
    /// exists in `accounts` with the same uid.
    pub fn new(
        credentials: Arc<TemporaryCredentials>,
        accounts: Arc<dyn ServiceAccountDirectory>,
    ) -> Self {
        Self {
            credentials,
            accounts,
        }
    }
}

#[async_trait]
impl Authenticator for TemporaryCredentialAuthenticator {
    async fn lookup(
        &self,
        access_key_id: &str,
        session_token: Option<&str>,
    ) -> Result<Option<(SecretBytes, Caller)>, AwsError> {
        let Some(session_token) = session_token else {
            return Ok(None);
        };
        let Some(grant) = self.credentials.open(access_key_id, session_token) else {
            return Ok(None);
        };
        if grant.expiration <= self.credentials.clock.now() {
            return Err(AwsError::client(
                "ExpiredTokenException",
                "The security token included in the request is expired",
            ));
        }
        let identity = &grant.identity;
        match self
            .accounts
            .uid_of(&identity.namespace, &identity.name)
            .await
        {
            Ok(Some(uid)) if uid == identity.uid => {}
            Ok(_) => {
                tracing::info!(
                    namespace = %identity.namespace,
                    service_account = %identity.name,
                    "temporary credentials of a ServiceAccount that no longer exists were refused"
                );
                return Err(AwsError::client(
                    "UnrecognizedClientException",
                    "The security token included in the request is invalid.",
                ));
            }
            Err(err) => {
                tracing::warn!(error = %err, "a ServiceAccount could not be looked up");
                return Err(AwsError::unavailable(
                    "The security token could not be checked; try again.",
                ));
            }
        }
        Ok(Some((grant.secret_access_key, grant.identity.to_caller())))
    }
}

/// Tries several authenticators in turn: the first that knows the key wins, and the first error
/// ends the search. In Kubernetes mode this chains [`TemporaryCredentialAuthenticator`] with
/// any long-lived key directory.
pub struct ChainAuthenticator(pub Vec<Arc<dyn Authenticator>>);

impl fmt::Debug for ChainAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ChainAuthenticator")
            .field(&self.0.len())
            .finish()
    }
}

#[async_trait]
impl Authenticator for ChainAuthenticator {
    async fn lookup(
        &self,
        access_key_id: &str,
        session_token: Option<&str>,
    ) -> Result<Option<(SecretBytes, Caller)>, AwsError> {
        for authenticator in &self.0 {
            if let Some(found) = authenticator.lookup(access_key_id, session_token).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

/// What the endpoint needs: a token reviewer and the credentials it issues.
pub struct CredentialsEndpoint {
    reviewer: Arc<TokenReviewer>,
    credentials: Arc<TemporaryCredentials>,
}

impl fmt::Debug for CredentialsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsEndpoint")
            .field("reviewer", &self.reviewer)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl CredentialsEndpoint {
    pub fn new(reviewer: Arc<TokenReviewer>, credentials: Arc<TemporaryCredentials>) -> Self {
        Self {
            reviewer,
            credentials,
        }
    }
}

/// The endpoint's routes: `GET /v1/credentials`.
pub fn router(endpoint: Arc<CredentialsEndpoint>) -> Router {
    Router::new()
        .route(CREDENTIALS_PATH, get(handle))
        .with_state(endpoint)
}

/// The answer the AWS SDKs' container credential providers read.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialsAnswer<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: &'a str,
}

async fn handle(State(endpoint): State<Arc<CredentialsEndpoint>>, headers: HeaderMap) -> Response {
    let Some(token) = presented_token(&headers) else {
        return failure(
            StatusCode::UNAUTHORIZED,
            "The Authorization header must carry a ServiceAccount token.",
        );
    };
    let identity = match endpoint.reviewer.review(token).await {
        Ok(identity) => identity,
        Err(err) if err.is_unavailable() => {
            tracing::warn!(error = %err, "a credentials request could not be reviewed");
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "The ServiceAccount token could not be checked; try again.",
            );
        }
        Err(err) => {
            tracing::info!(reason = %err, "a credentials request was refused");
            return failure(
                StatusCode::UNAUTHORIZED,
                "The ServiceAccount token was not accepted.",
            );
        }
    };
    let now = endpoint.credentials.clock.now();
    let issued = endpoint
        .credentials
        .issue_until(&identity, now, token_expiry(token))
        .and_then(|issued| {
            issued
                .expiration_rfc3339()
                .map(|expiration| (issued, expiration))
        });
    let (issued, expiration) = match issued {
        Ok(issued) => issued,
        Err(CredentialsError::InvalidExpiry) => {
            return failure(
                StatusCode::UNAUTHORIZED,
                "The ServiceAccount token was not accepted.",
            );
        }
        Err(err) => {
            tracing::error!(error = %err, "issuing temporary credentials failed");
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Temporary credentials could not be issued.",
            );
        }
    };
    let (Ok(secret), Ok(session_token)) = (
        std::str::from_utf8(issued.secret_access_key.expose()),
        std::str::from_utf8(issued.session_token.expose()),
    ) else {
        return failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Temporary credentials could not be issued.",
        );
    };
    let body = serde_json::to_vec(&CredentialsAnswer {
        access_key_id: &issued.access_key_id,
        secret_access_key: secret,
        token: session_token,
        expiration: &expiration,
    });
    let Ok(body) = body else {
        return failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Temporary credentials could not be issued.",
        );
    };
    tracing::info!(
        namespace = %identity.namespace,
        service_account = %identity.name,
        access_key_id = %issued.access_key_id,
        expiration = %expiration,
        "issued temporary credentials"
    );
    json_response(StatusCode::OK, body)
}

/// The token in `Authorization`, without a `Bearer ` prefix if one was sent.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?.trim();
    let token = match (value.get(..6), value.get(6..)) {
        (Some(scheme), Some(rest))
            if scheme.eq_ignore_ascii_case("bearer")
                && (rest.is_empty() || rest.starts_with([' ', '\t'])) =>
        {
            rest.trim_start()
        }
        _ => value,
    };
    (!token.is_empty()).then_some(token)
}

fn failure(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "message": message })
        .to_string()
        .into_bytes();
    json_response(status, body)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::account::account_id;
    use std::sync::atomic::{AtomicI64, Ordering};

    struct FixedClock(AtomicI64);

    impl Clock for FixedClock {
        fn now(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    const NOW: i64 = 1_800_000_000;

    fn identity() -> ServiceAccountIdentity {
        ServiceAccountIdentity {
            namespace: "team-a".into(),
            name: "app".into(),
            uid: "5a1e1f0b-0c4f-4a57-9c55-0d2b7f6a1a11".into(),
        }
    }

    /// ServiceAccounts that exist, with their uids; `None` makes every lookup fail.
    #[derive(Debug)]
    struct Accounts(std::sync::Mutex<Option<std::collections::HashMap<(String, String), String>>>);

    impl Accounts {
        /// Holds [`identity`]'s ServiceAccount.
        fn holding_identity() -> Arc<Accounts> {
            let id = identity();
            let accounts = Accounts(std::sync::Mutex::new(Some(Default::default())));
            accounts.set(&id.namespace, &id.name, Some(&id.uid));
            Arc::new(accounts)
        }

        fn set(&self, namespace: &str, name: &str, uid: Option<&str>) {
            let mut guard = self.0.lock().unwrap();
            let known = guard.get_or_insert_with(Default::default);
            let key = (namespace.to_owned(), name.to_owned());
            match uid {
                Some(uid) => known.insert(key, uid.to_owned()),
                None => known.remove(&key),
            };
        }

        fn unreachable(&self) {
            *self.0.lock().unwrap() = None;
        }
    }

    #[async_trait]
    impl ServiceAccountDirectory for Accounts {
        async fn uid_of(
            &self,
            namespace: &str,
            name: &str,
        ) -> Result<Option<String>, crate::aws::kube_identity::KubeIdentityError> {
            match &*self.0.lock().unwrap() {
                Some(known) => Ok(known.get(&(namespace.to_owned(), name.to_owned())).cloned()),
                None => Err(crate::aws::kube_identity::KubeIdentityError::Unreachable {
                    review: "ServiceAccount lookup",
                }),
            }
        }
    }

    fn credentials_at(
        keyring: Arc<RootKeyring>,
        now: i64,
    ) -> (Arc<TemporaryCredentials>, Arc<FixedClock>) {
        let clock = Arc::new(FixedClock(AtomicI64::new(now)));
        let credentials =
            Arc::new(TemporaryCredentials::new(keyring).with_clock(Arc::clone(&clock) as _));
        (credentials, clock)
    }

    fn token_text(issued: &IssuedCredentials) -> &str {
        std::str::from_utf8(issued.session_token.expose()).unwrap()
    }

    #[tokio::test]
    async fn issued_credentials_authenticate_as_the_service_account() {
        let (credentials, _) = credentials_at(Arc::new(RootKeyring::generate()), NOW);
        let issued = credentials.issue(&identity(), NOW).unwrap();
        assert!(
            is_temporary_key_id(&issued.access_key_id),
            "{}",
            issued.access_key_id
        );
        assert_eq!(issued.secret_access_key.len(), 40);
        assert_eq!(issued.expiration, NOW + 3600);
        assert_eq!(issued.expiration_rfc3339().unwrap(), "2027-01-15T09:00:00Z");

        let authenticator = TemporaryCredentialAuthenticator::new(
            Arc::clone(&credentials),
            Accounts::holding_identity(),
        );
        let (secret, caller) = authenticator
            .lookup(&issued.access_key_id, Some(token_text(&issued)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(secret, issued.secret_access_key);
        assert_eq!(caller.namespace, "team-a");
        assert_eq!(caller.principal.account_id, account_id("team-a"));
        assert_eq!(caller.principal.arn, identity().principal_arn());
        let grant = credentials
            .open(&issued.access_key_id, token_text(&issued))
            .unwrap();
        assert_eq!(grant.identity, identity());

        // Two issues never share a key or a secret.
        let other = credentials.issue(&identity(), NOW).unwrap();
        assert_ne!(other.access_key_id, issued.access_key_id);
        assert_ne!(other.secret_access_key, issued.secret_access_key);
    }

    #[tokio::test]
    async fn any_replica_with_the_keyring_accepts_them_across_root_rotation() {
        let keyring = RootKeyring::generate();
        let (credentials, _) = credentials_at(Arc::new(keyring.clone()), NOW);
        let issued = credentials.issue(&identity(), NOW).unwrap();
        let mut rotated = keyring.clone();
        rotated.rotate().unwrap();
        let (replica, _) = credentials_at(Arc::new(rotated), NOW);
        let authenticator =
            TemporaryCredentialAuthenticator::new(replica, Accounts::holding_identity());
        let (secret, _) = authenticator
            .lookup(&issued.access_key_id, Some(token_text(&issued)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(secret, issued.secret_access_key);
        // Another keyring cannot open them.
        let (stranger, _) = credentials_at(Arc::new(RootKeyring::generate()), NOW);
        assert!(
            stranger
                .open(&issued.access_key_id, token_text(&issued))
                .is_none()
        );
    }

    #[tokio::test]
    async fn tampered_foreign_and_missing_tokens_are_unknown_keys() {
        let (credentials, _) = credentials_at(Arc::new(RootKeyring::generate()), NOW);
        let authenticator = TemporaryCredentialAuthenticator::new(
            Arc::clone(&credentials),
            Accounts::holding_identity(),
        );
        let issued = credentials.issue(&identity(), NOW).unwrap();
        let other = credentials.issue(&identity(), NOW).unwrap();
        let token = token_text(&issued);

        let unknown =
            |result: Result<Option<(SecretBytes, Caller)>, AwsError>| matches!(result, Ok(None));
        // No session token at all.
        assert!(unknown(
            authenticator.lookup(&issued.access_key_id, None).await
        ));
        // A valid token presented with another access key id.
        assert!(unknown(
            authenticator
                .lookup(&other.access_key_id, Some(token))
                .await
        ));
        // Every single-character change, and truncations.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for i in (0..token.len()).step_by(7) {
            let mut bytes = token.as_bytes().to_vec();
            let at = alphabet.iter().position(|c| *c == bytes[i]).unwrap();
            bytes[i] = alphabet[(at + 1) % alphabet.len()];
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(
                unknown(
                    authenticator
                        .lookup(&issued.access_key_id, Some(&tampered))
                        .await
                ),
                "change at {i}"
            );
        }
        for len in [0, 1, 10, token.len() / 2, token.len() - 1] {
            assert!(unknown(
                authenticator
                    .lookup(&issued.access_key_id, Some(&token[..len]))
                    .await
            ));
        }
        // Garbage and oversized tokens, and access key ids of the wrong shape.
        let huge = "A".repeat(MAX_SESSION_TOKEN_LEN + 1);
        for bad in ["", "!!!", "AAAA", huge.as_str()] {
            assert!(unknown(
                authenticator.lookup(&issued.access_key_id, Some(bad)).await
            ));
        }
        let akia = issued.access_key_id.replacen("ASIA", "AKIA", 1);
        assert!(unknown(authenticator.lookup(&akia, Some(token)).await));
        assert!(unknown(authenticator.lookup("", Some(token)).await));
    }

    #[tokio::test]
    async fn an_expired_token_is_expired_token_exception() {
        let (credentials, clock) = credentials_at(Arc::new(RootKeyring::generate()), NOW);
        let authenticator = TemporaryCredentialAuthenticator::new(
            Arc::clone(&credentials),
            Accounts::holding_identity(),
        );
        let issued = credentials.issue(&identity(), NOW).unwrap();
        clock.0.store(NOW + 3599, Ordering::SeqCst);
        assert!(
            authenticator
                .lookup(&issued.access_key_id, Some(token_text(&issued)))
                .await
                .unwrap()
                .is_some()
        );
        clock.0.store(NOW + 3600, Ordering::SeqCst);
        let err = authenticator
            .lookup(&issued.access_key_id, Some(token_text(&issued)))
            .await
            .unwrap_err();
        assert_eq!(err.code, "ExpiredTokenException");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            err.message,
            "The security token included in the request is expired"
        );
    }

    #[tokio::test]
    async fn credentials_die_with_their_service_account() {
        let (credentials, _) = credentials_at(Arc::new(RootKeyring::generate()), NOW);
        let accounts = Accounts::holding_identity();
        let authenticator =
            TemporaryCredentialAuthenticator::new(Arc::clone(&credentials), accounts.clone());
        let issued = credentials.issue(&identity(), NOW).unwrap();
        let present = || authenticator.lookup(&issued.access_key_id, Some(token_text(&issued)));
        assert!(present().await.unwrap().is_some());

        let refused = |err: AwsError| {
            assert_eq!(err.code, "UnrecognizedClientException");
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
        };
        // Deleted...
        let id = identity();
        accounts.set(&id.namespace, &id.name, None);
        refused(present().await.unwrap_err());
        // ...and re-created under the same name: a new uid, which the old credentials do not name.
        accounts.set(
            &id.namespace,
            &id.name,
            Some("0d9c7a1e-7f7b-4b8e-a1d2-3c4d5e6f7a8b"),
        );
        refused(present().await.unwrap_err());
        // When nobody can say, the request is refused as retryable, not let through.
        accounts.unreachable();
        let err = present().await.unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        // Back as it was issued to: accepted again.
        accounts.set(&id.namespace, &id.name, Some(&id.uid));
        assert!(present().await.unwrap().is_some());
    }

    #[test]
    fn lifetimes_are_configurable_and_capped_by_the_service_account_token() {
        let keyring = Arc::new(RootKeyring::generate());
        let credentials = TemporaryCredentials::new(Arc::clone(&keyring))
            .with_lifetime(Duration::from_secs(2 * 3600))
            .unwrap();
        assert_eq!(credentials.lifetime(), Duration::from_secs(7200));
        assert_eq!(
            credentials.issue(&identity(), NOW).unwrap().expiration,
            NOW + 7200
        );
        let capped = credentials
            .issue_until(&identity(), NOW, Some(NOW + 600))
            .unwrap();
        assert_eq!(capped.expiration, NOW + 600);
        let later = credentials
            .issue_until(&identity(), NOW, Some(NOW + 100_000))
            .unwrap();
        assert_eq!(later.expiration, NOW + 7200);
        assert!(matches!(
            credentials.issue_until(&identity(), NOW, Some(NOW)),
            Err(CredentialsError::InvalidExpiry)
        ));
        for bad in [
            Duration::ZERO,
            Duration::from_secs(60),
            Duration::from_secs(13 * 3600),
        ] {
            assert!(matches!(
                TemporaryCredentials::new(Arc::clone(&keyring)).with_lifetime(bad),
                Err(CredentialsError::InvalidLifetime)
            ));
        }
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let (credentials, _) = credentials_at(Arc::new(RootKeyring::generate()), NOW);
        let issued = credentials.issue(&identity(), NOW).unwrap();
        let grant = credentials
            .open(&issued.access_key_id, token_text(&issued))
            .unwrap();
        let secret = std::str::from_utf8(issued.secret_access_key.expose()).unwrap();
        for shown in [
            format!("{issued:?}"),
            format!("{grant:?}"),
            format!("{credentials:?}"),
        ] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains(token_text(&issued)), "{shown}");
        }
        assert!(format!("{issued:?}").contains(&issued.access_key_id));
    }

    struct Fixed(Option<&'static str>, bool);

    #[async_trait]
    impl Authenticator for Fixed {
        async fn lookup(
            &self,
            _access_key_id: &str,
            _session_token: Option<&str>,
        ) -> Result<Option<(SecretBytes, Caller)>, AwsError> {
            if self.1 {
                return Err(AwsError::client("ExpiredTokenException", "expired"));
            }
            Ok(self.0.map(|name| {
                let caller = ServiceAccountIdentity {
                    namespace: "ns".into(),
                    name: name.into(),
                    uid: String::new(),
                }
                .to_caller();
                (SecretBytes::from_slice(name.as_bytes()), caller)
            }))
        }
    }

    #[tokio::test]
    async fn the_chain_takes_the_first_known_key() {
        let chain = |links: Vec<Fixed>| {
            ChainAuthenticator(
                links
                    .into_iter()
                    .map(|link| Arc::new(link) as Arc<dyn Authenticator>)
                    .collect(),
            )
        };
        let found = chain(vec![
            Fixed(None, false),
            Fixed(Some("b"), false),
            Fixed(Some("c"), false),
        ])
        .lookup("AKIA", None)
        .await
        .unwrap()
        .unwrap();
        assert_eq!(found.0.expose(), b"b");
        assert!(
            chain(vec![Fixed(None, false), Fixed(None, false)])
                .lookup("AKIA", None)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            chain(Vec::new())
                .lookup("AKIA", None)
                .await
                .unwrap()
                .is_none()
        );
        let err = chain(vec![Fixed(None, true), Fixed(Some("b"), false)])
            .lookup("AKIA", None)
            .await
            .unwrap_err();
        assert_eq!(err.code, "ExpiredTokenException");
        // A standalone directory and temporary credentials side by side.
        let (credentials, _) = credentials_at(Arc::new(RootKeyring::generate()), NOW);
        let issued = credentials.issue(&identity(), NOW).unwrap();
        let chained = ChainAuthenticator(vec![
            Arc::new(Fixed(None, false)),
            Arc::new(TemporaryCredentialAuthenticator::new(
                credentials,
                Accounts::holding_identity(),
            )),
        ]);
        let (secret, _) = chained
            .lookup(&issued.access_key_id, Some(token_text(&issued)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(secret, issued.secret_access_key);
    }

    #[test]
    fn the_authorization_header_may_carry_a_bearer_prefix() {
        let headers = |values: &[&str]| {
            let mut map = HeaderMap::new();
            for value in values {
                map.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            }
            map
        };
        assert_eq!(
            presented_token(&headers(&["abc.def.ghi"])),
            Some("abc.def.ghi")
        );
        assert_eq!(
            presented_token(&headers(&["Bearer abc.def.ghi"])),
            Some("abc.def.ghi")
        );
        assert_eq!(presented_token(&headers(&["bearer  abc"])), Some("abc"));
        assert_eq!(presented_token(&headers(&["abc "])), Some("abc"));
        assert_eq!(presented_token(&headers(&[])), None);
        assert_eq!(presented_token(&headers(&[""])), None);
        assert_eq!(presented_token(&headers(&["Bearer "])), None);
        assert_eq!(presented_token(&headers(&["bearer"])), None);
        assert_eq!(
            presented_token(&headers(&["Bearerish.token"])),
            Some("Bearerish.token")
        );
        assert_eq!(presented_token(&headers(&["a", "b"])), None);
    }

    /// The endpoint served on a real socket, with TokenReview answered by a mocked API server.
    mod endpoint {
        use super::*;
        use crate::aws::sigv4::SignedRequest;
        use axum::body::{Body as AxumBody, to_bytes};
        use axum::routing::post;
        use http::{Request, Response as HttpResponse};
        use kube::client::Body;
        use std::sync::Mutex;
        use std::sync::atomic::AtomicUsize;

        use crate::test_support::tokens::service_account_token_exp as sa_token_exp;

        fn jwt(exp: i64) -> String {
            crate::test_support::tokens::jwt(&serde_json::json!({
                "aud": ["coffer"],
                "exp": exp,
                "sub": "system:serviceaccount:team-a:app",
            }))
        }

        /// How the mocked API server answers TokenReviews.
        #[derive(Clone, Copy)]
        enum ApiBehaviour {
            /// Authenticates exactly the token it was made with.
            Accept,
            Fail500,
        }

        struct Api {
            requests: Arc<AtomicUsize>,
        }

        fn mocked_reviewer(
            valid_token: String,
            behaviour: ApiBehaviour,
        ) -> (Arc<TokenReviewer>, Api) {
            let (service, mut handle) =
                tower_test::mock::pair::<Request<Body>, HttpResponse<Body>>();
            let requests = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&requests);
            tokio::spawn(async move {
                while let Some((request, send)) = handle.next_request().await {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = request.into_body().collect_bytes().await.unwrap();
                    let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let (code, answer) = match behaviour {
                        ApiBehaviour::Fail500 => (
                            500,
                            serde_json::json!({"kind": "Status", "code": 500, "message": "etcd down"}),
                        ),
                        ApiBehaviour::Accept => {
                            let status = if review["spec"]["token"] == valid_token.as_str()
                                && review["spec"]["audiences"] == serde_json::json!(["coffer"])
                            {
                                serde_json::json!({
                                    "authenticated": true,
                                    "audiences": ["coffer"],
                                    "user": {
                                        "username": "system:serviceaccount:team-a:app",
                                        "uid": "5a1e1f0b-0c4f-4a57-9c55-0d2b7f6a1a11",
                                    },
                                })
                            } else {
                                serde_json::json!({"authenticated": false, "error": "invalid bearer token"})
                            };
                            (
                                201,
                                serde_json::json!({
                                    "kind": "TokenReview",
                                    "apiVersion": "authentication.k8s.io/v1",
                                    "spec": review["spec"],
                                    "status": status,
                                }),
                            )
                        }
                    };
                    send.send_response(
                        HttpResponse::builder()
                            .status(code)
                            .header("content-type", "application/json")
                            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                            .unwrap(),
                    );
                }
            });
            let client = kube::Client::new(service, "default");
            (Arc::new(TokenReviewer::new(client)), Api { requests })
        }

        async fn serve(app: Router) -> std::net::SocketAddr {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            addr
        }

        async fn get(
            addr: std::net::SocketAddr,
            authorization: Option<&str>,
        ) -> (u16, Option<String>, serde_json::Value) {
            let mut request =
                reqwest::Client::new().get(format!("http://{addr}{CREDENTIALS_PATH}"));
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|value| value.to_str().unwrap().to_owned());
            let body = response.bytes().await.unwrap();
            (status, content_type, serde_json::from_slice(&body).unwrap())
        }

        fn endpoint_for(
            reviewer: Arc<TokenReviewer>,
            keyring: Arc<RootKeyring>,
        ) -> Arc<CredentialsEndpoint> {
            Arc::new(CredentialsEndpoint::new(
                reviewer,
                Arc::new(TemporaryCredentials::new(keyring)),
            ))
        }

        #[tokio::test]
        async fn a_reviewed_token_gets_the_four_fields() {
            let token = jwt(sa_token_exp());
            let (reviewer, api) = mocked_reviewer(token.clone(), ApiBehaviour::Accept);
            let keyring = Arc::new(RootKeyring::generate());
            let addr = serve(router(endpoint_for(reviewer, Arc::clone(&keyring)))).await;

            let (status, content_type, body) = get(addr, Some(&token)).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(content_type.as_deref(), Some("application/json"));
            let fields: Vec<&String> = body.as_object().unwrap().keys().collect();
            assert_eq!(fields.len(), 4, "{body}");
            let access_key_id = body["AccessKeyId"].as_str().unwrap();
            let secret = body["SecretAccessKey"].as_str().unwrap();
            let session_token = body["Token"].as_str().unwrap();
            assert!(is_temporary_key_id(access_key_id));
            assert_eq!(secret.len(), 40);
            let expiration =
                OffsetDateTime::parse(body["Expiration"].as_str().unwrap(), &Rfc3339).unwrap();
            assert_eq!(expiration.offset(), time::UtcOffset::UTC);
            assert!(body["Expiration"].as_str().unwrap().ends_with('Z'));
            let left = expiration.unix_timestamp() - SystemClock.now();
            assert!((3590..=3600).contains(&left), "{left}");

            // What was issued authenticates as the ServiceAccount.
            let (credentials, _) = credentials_at(keyring, SystemClock.now());
            let (found, caller) =
                TemporaryCredentialAuthenticator::new(credentials, Accounts::holding_identity())
                    .lookup(access_key_id, Some(session_token))
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(found.expose(), secret.as_bytes());
            assert_eq!(caller.principal.arn, identity().principal_arn());

            // A Bearer prefix is tolerated; the review is cached, so no second request.
            let (status, _, _) = get(addr, Some(&format!("Bearer {token}"))).await;
            assert_eq!(status, 200);
            assert_eq!(api.requests.load(Ordering::SeqCst), 1);
        }

        #[tokio::test]
        async fn expiration_never_passes_the_service_account_tokens() {
            let exp = SystemClock.now() + 20 * 60;
            let token = jwt(exp);
            let (reviewer, _api) = mocked_reviewer(token.clone(), ApiBehaviour::Accept);
            let addr = serve(router(endpoint_for(
                reviewer,
                Arc::new(RootKeyring::generate()),
            )))
            .await;
            let (status, _, body) = get(addr, Some(&token)).await;
            assert_eq!(status, 200, "{body}");
            let expiration =
                OffsetDateTime::parse(body["Expiration"].as_str().unwrap(), &Rfc3339).unwrap();
            assert_eq!(expiration.unix_timestamp(), exp);
        }

        #[tokio::test]
        async fn missing_or_refused_tokens_are_401_and_api_failures_503() {
            let token = jwt(sa_token_exp());
            let (reviewer, api) = mocked_reviewer(token.clone(), ApiBehaviour::Accept);
            let addr = serve(router(endpoint_for(
                reviewer,
                Arc::new(RootKeyring::generate()),
            )))
            .await;

            let (status, content_type, body) = get(addr, None).await;
            assert_eq!(status, 401);
            assert_eq!(content_type.as_deref(), Some("application/json"));
            assert!(body["message"].is_string(), "{body}");
            let (status, _, _) = get(addr, Some("Bearer ")).await;
            assert_eq!(status, 401);
            assert_eq!(api.requests.load(Ordering::SeqCst), 0, "nothing to review");

            let wrong = jwt(sa_token_exp() - 1);
            let (status, _, body) = get(addr, Some(&wrong)).await;
            assert_eq!(status, 401);
            assert!(
                !body.to_string().contains(&wrong),
                "the token is not echoed: {body}"
            );
            assert_eq!(api.requests.load(Ordering::SeqCst), 1);

            let (reviewer, _api) = mocked_reviewer(token.clone(), ApiBehaviour::Fail500);
            let addr = serve(router(endpoint_for(
                reviewer,
                Arc::new(RootKeyring::generate()),
            )))
            .await;
            let (status, _, body) = get(addr, Some(&token)).await;
            assert_eq!(status, 503);
            assert!(!body.to_string().contains(&token), "{body}");
        }

        /// What the test KMS route saw of each signed request.
        #[derive(Clone, Debug)]
        struct Verified {
            access_key_id: String,
            had_session_token: bool,
            principal: String,
            target: String,
        }

        struct VerifyState {
            authenticator: TemporaryCredentialAuthenticator,
            seen: Mutex<Vec<Verified>>,
        }

        /// Verifies a SigV4-signed AWS JSON 1.1 call as the front end does: 200 `{}` when the
        /// session token and signature verify, 400 otherwise.
        async fn verify_signed(
            State(state): State<Arc<VerifyState>>,
            request: Request<AxumBody>,
        ) -> Response {
            let (parts, body) = request.into_parts();
            let reject = |message: String| {
                let body =
                    serde_json::json!({"__type": "InvalidSignatureException", "message": message});
                (StatusCode::BAD_REQUEST, body.to_string()).into_response()
            };
            let Ok(body) = to_bytes(body, 1 << 20).await else {
                return reject("body".into());
            };
            let signed = match SignedRequest::parse(&parts) {
                Ok(signed) => signed,
                Err(err) => return reject(err.to_string()),
            };
            let (secret, caller) = match state
                .authenticator
                .lookup(&signed.access_key_id, signed.session_token.as_deref())
                .await
            {
                Ok(Some(found)) => found,
                Ok(None) => return reject("unknown key".into()),
                Err(err) => return reject(err.message),
            };
            if let Err(err) =
                signed.verify(&parts, &body, secret.expose(), std::time::SystemTime::now())
            {
                return reject(err.to_string());
            }
            state.seen.lock().unwrap().push(Verified {
                access_key_id: signed.access_key_id.clone(),
                had_session_token: signed.session_token.is_some(),
                principal: caller.principal.arn,
                target: parts
                    .headers
                    .get("x-amz-target")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
            });
            let mut response = (StatusCode::OK, "{}").into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            response
        }

        const BOTO3_SCRIPT: &str = r#"
import json, sys
import boto3

session = boto3.Session(region_name="us-east-1")
credentials = session.get_credentials()
client = session.client("kms", endpoint_url=sys.argv[1])
out = client.list_keys()
frozen = credentials.get_frozen_credentials()
print(json.dumps({
    "method": credentials.method,
    "status": out["ResponseMetadata"]["HTTPStatusCode"],
    "access_key": frozen.access_key,
}))
"#;

        fn require_boto3() {
            let available = std::process::Command::new("python3")
                .args(["-c", "import boto3"])
                .output()
                .map(|output| output.status.success())
                .unwrap_or(false);
            assert!(
                available,
                "python3 with boto3 is required for the container-credentials round trip: \
                 run the tests with `make test`, or with `e2e/python.sh --venv`'s bin first on PATH"
            );
        }

        /// The endpoint and a signature-checking `/` for boto3 to call, and the token it reviews.
        fn boto3_target() -> (Router, Arc<VerifyState>, String, Arc<AtomicUsize>) {
            let token = jwt(sa_token_exp());
            let (reviewer, api) = mocked_reviewer(token.clone(), ApiBehaviour::Accept);
            let credentials =
                Arc::new(TemporaryCredentials::new(Arc::new(RootKeyring::generate())));
            let state = Arc::new(VerifyState {
                authenticator: TemporaryCredentialAuthenticator::new(
                    Arc::clone(&credentials),
                    Accounts::holding_identity(),
                ),
                seen: Mutex::new(Vec::new()),
            });
            let app = router(Arc::new(CredentialsEndpoint::new(reviewer, credentials))).merge(
                Router::new()
                    .route("/", post(verify_signed))
                    .with_state(Arc::clone(&state)),
            );
            (app, state, token, Arc::clone(&api.requests))
        }

        /// Runs boto3 with nothing but container credentials: `credentials_uri` to fetch them,
        /// `endpoint` to call ListKeys on, and `extra` environment.
        async fn run_boto3(
            credentials_uri: &str,
            endpoint: &str,
            token: &str,
            extra: &[(&str, &std::path::Path)],
        ) -> serde_json::Value {
            require_boto3();
            let dir = tempfile::tempdir().unwrap();
            let token_file = dir.path().join("token");
            std::fs::write(&token_file, token.as_bytes()).unwrap();
            let mut command = tokio::process::Command::new("python3");
            command
                .arg("-c")
                .arg(BOTO3_SCRIPT)
                .arg(endpoint)
                .env_clear();
            for keep in [
                "PATH",
                "HOME",
                "PYTHONPATH",
                "VIRTUAL_ENV",
                "LANG",
                "LC_ALL",
            ] {
                if let Some(value) = std::env::var_os(keep) {
                    command.env(keep, value);
                }
            }
            for (name, value) in extra {
                command.env(name, value);
            }
            command
                .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", credentials_uri)
                .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file)
                .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
                .env("AWS_CONFIG_FILE", "/nonexistent")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .kill_on_drop(true);
            let output = tokio::time::timeout(Duration::from_secs(120), command.output())
                .await
                .expect("boto3 finished in time")
                .expect("python3 runs");
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success(),
                "boto3 failed\nstdout: {stdout}\nstderr: {stderr}"
            );
            serde_json::from_str(stdout.trim()).unwrap()
        }

        /// Checks that boto3 signed exactly one ListKeys with fresh temporary credentials.
        fn assert_signed_once(state: &VerifyState, report: &serde_json::Value) {
            assert_eq!(report["method"], "container-role", "{report}");
            assert_eq!(report["status"], 200, "{report}");
            let seen = state.seen.lock().unwrap().clone();
            assert_eq!(seen.len(), 1, "{seen:?}");
            let call = &seen[0];
            assert_eq!(call.access_key_id, report["access_key"].as_str().unwrap());
            assert!(is_temporary_key_id(&call.access_key_id));
            assert!(call.had_session_token);
            assert_eq!(call.principal, identity().principal_arn());
            assert_eq!(call.target, "TrentService.ListKeys");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn boto3_fetches_credentials_and_signs_with_them() {
            let (app, state, token, reviews) = boto3_target();
            let addr = serve(app).await;
            let report = run_boto3(
                &format!("http://{addr}{CREDENTIALS_PATH}"),
                &format!("http://{addr}"),
                &token,
                &[],
            )
            .await;
            assert_signed_once(&state, &report);
            assert_eq!(reviews.load(Ordering::SeqCst), 1);
        }

        /// The in-cluster shape: the controller serves HTTPS with a private CA, which botocore
        /// does not trust for credentials, so boto3 fetches them from the loopback proxy and
        /// calls the API over HTTPS with `AWS_CA_BUNDLE`.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn boto3_in_a_pod_uses_the_loopback_proxy_and_https() {
            let (app, state, token, reviews) = boto3_target();
            let dir = tempfile::tempdir().unwrap();
            let generated =
                rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            let cert = dir.path().join("tls.crt");
            let key = dir.path().join("tls.key");
            std::fs::write(&cert, generated.cert.pem()).unwrap();
            std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let upstream = format!(
                "https://localhost:{}",
                listener.local_addr().unwrap().port()
            );
            tokio::spawn(crate::serve::serve(
                listener,
                app,
                Some(crate::serve::TlsFiles::new(&cert, &key)),
                crate::serve::ConnectionLimits::DEFAULT,
                std::future::pending(),
            ));
            let proxy =
                crate::credentials_proxy::CredentialsProxy::new(&upstream, Some(&cert)).unwrap();
            let proxy_addr = serve(Arc::new(proxy).router()).await;

            let report = run_boto3(
                &format!("http://{proxy_addr}{CREDENTIALS_PATH}"),
                &upstream,
                &token,
                &[("AWS_CA_BUNDLE", cert.as_path())],
            )
            .await;
            assert_signed_once(&state, &report);
            assert_eq!(reviews.load(Ordering::SeqCst), 1);
        }
    }
}
