//! Kubernetes workload identity (docs/wire.md, "Kubernetes"): who a ServiceAccount token belongs
//! to, checked with TokenReview, and what that ServiceAccount may do, asked of RBAC with
//! SubjectAccessReview.
//!
//! - [`TokenReviewer`] turns a ServiceAccount token (audience `coffer`) into a
//!   [`ServiceAccountIdentity`]. Only tokens the API server authenticates, for Coffer's audience,
//!   and that name a ServiceAccount are accepted.
//!   It is also the AWS front end's [`BearerAuthenticator`].
//! - [`KubernetesAuthority`] is the [`AccountAuthority`] of Kubernetes mode: a key policy statement
//!   that names the caller's account delegates to RBAC on the `kmskeys` resource of group
//!   `coffer.dev`, so `kubectl auth can-i decrypt kmskeys/ID --as system:serviceaccount:NS:SA`
//!   answers exactly what Coffer will decide. Secrets Manager actions are asked on `secrets` of
//!   the same group with the standard verbs (`kubectl auth can-i get secrets.coffer.dev/NAME`),
//!   and SSM Parameter Store actions on `parameters` (`kubectl auth can-i get
//!   parameters.coffer.dev/NAME`). docs/authorization.md has the tables.
//!
//! Both talk to the API server through [`kube::Client::send`] and parse the answers themselves:
//! a TokenReview answer echoes the token back, and the higher-level client methods log a body
//! they cannot parse. Tokens are never logged, never put in an error, and never used as a cache
//! key (their SHA-256 is).

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use zeroize::{Zeroize as _, Zeroizing};

use crate::aws::AwsError;
use crate::aws::identity::BearerAuthenticator;
use crate::engine::account::{Arn, account_id};
use crate::engine::{AccountAuthority, Caller, Clock as _, Principal, SystemClock};

/// The audience Coffer's ServiceAccount tokens are issued for (docs/wire.md, "Kubernetes").
pub const DEFAULT_AUDIENCE: &str = "coffer";

/// How long a successful TokenReview is reused for the same token: 30 seconds, never past the
/// token's own `exp`. A token that becomes invalid (its pod or ServiceAccount deleted) stops working at most
/// this long after the API server stops accepting it.
pub const TOKEN_REVIEW_CACHE_TTL: Duration = Duration::from_secs(30);

/// How long a refused token is refused without asking the API server again. API failures are
/// not refusals and are never cached.
pub const REFUSED_TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);

/// The most TokenReview results kept at once.
pub const TOKEN_REVIEW_CACHE_CAPACITY: usize = 4096;

/// How long a SubjectAccessReview decision (allowed or denied) is reused: 10 seconds, so an RBAC
/// change takes effect within that time. API failures are not cached.
pub const ACCESS_REVIEW_CACHE_TTL: Duration = Duration::from_secs(10);

/// The most SubjectAccessReview decisions kept at once.
pub const ACCESS_REVIEW_CACHE_CAPACITY: usize = 8192;

/// The API group of Coffer's custom resources, which RBAC rules on `kmskeys`, `secrets` and
/// `parameters` name.
pub const RBAC_GROUP: &str = "coffer.dev";

/// The resource RBAC rules name for KMS keys.
pub const KMS_KEYS_RESOURCE: &str = "kmskeys";

/// The resource RBAC rules name for Secrets Manager secrets (the `Secret` kind of `coffer.dev`).
pub const SECRETS_RESOURCE: &str = "secrets";

/// The resource RBAC rules name for SSM Parameter Store parameters (the `Parameter` kind of
/// `coffer.dev`).
pub const PARAMETERS_RESOURCE: &str = "parameters";

/// The random characters after the last `-` of a secret's ARN.
const SECRET_ARN_SUFFIX_LEN: usize = 6;

/// The longest secret name Secrets Manager accepts.
const MAX_SECRET_NAME_LEN: usize = 512;

/// Tokens longer than this are refused without asking the API server.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Reviews not answered from the cache, per second, for all callers together (with a burst of
/// twice as many): garbage tokens cannot turn into a flood of TokenReviews.
pub const UNCACHED_REVIEWS_PER_SECOND: u32 = 50;

/// How far in the past a token's `exp` may be before it is refused unreviewed (clock skew).
const EXPIRY_LEEWAY_SECONDS: i64 = 60;

/// How far in the future a token's `exp` may be: five years, past any lifetime an API server
/// issues (a year at most by default).
const MAX_TOKEN_LIFETIME_SECONDS: i64 = 5 * 366 * 24 * 3600;

const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";
const TOKEN_REVIEWS_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const SUBJECT_ACCESS_REVIEWS_PATH: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
const ROLE_PATH: &str = "role/serviceaccount/";

/// Everything that can go wrong in this module. No message carries a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeIdentityError {
    /// The token is not a JWT (three base64url parts, a header naming its algorithm, claims),
    /// is longer than [`MAX_TOKEN_LEN`], or its `exp` is missing or implausible: refused
    /// without a review.
    #[error("the token is not a well-formed, unexpired ServiceAccount token")]
    MalformedToken,

    /// Too many reviews are being asked for at once ([`UNCACHED_REVIEWS_PER_SECOND`]).
    #[error("too many tokens are being reviewed at once")]
    Busy,

    /// The API server did not authenticate the token.
    #[error("the token was not authenticated")]
    NotAuthenticated,

    /// The token was authenticated, but not for Coffer's audience.
    #[error("the token is not valid for the audience {audience:?}")]
    WrongAudience {
        /// The audience that was required.
        audience: String,
    },

    /// The token belongs to a user that is not a ServiceAccount.
    #[error("the token does not belong to a ServiceAccount")]
    NotServiceAccount,

    /// The request to the API server could not be built or sent, or its answer not read.
    #[error("the Kubernetes API could not be reached for a {review}")]
    Unreachable {
        /// `TokenReview` or `SubjectAccessReview`.
        review: &'static str,
    },

    /// The API server answered with an error status.
    #[error("the Kubernetes API answered {status} to a {review}")]
    Api {
        /// `TokenReview` or `SubjectAccessReview`.
        review: &'static str,
        /// The HTTP status code.
        status: u16,
    },

    /// The API server's answer does not parse.
    #[error("the Kubernetes API sent a {review} answer that does not parse")]
    MalformedAnswer {
        /// `TokenReview` or `SubjectAccessReview`.
        review: &'static str,
    },
}

impl KubeIdentityError {
    /// Whether the API server could not give an answer (as opposed to refusing the token): the
    /// credentials endpoint answers 503 for these, 401 for the rest.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::Api { .. } | Self::MalformedAnswer { .. } | Self::Busy
        )
    }
}

/// A Kubernetes ServiceAccount, as a TokenReview identified it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceAccountIdentity {
    /// The ServiceAccount's namespace, which is the caller's account.
    pub namespace: String,
    /// The ServiceAccount's name.
    pub name: String,
    /// The ServiceAccount's uid (empty if the API server did not say).
    pub uid: String,
}

impl ServiceAccountIdentity {
    /// The principal ARN under which this ServiceAccount appears in key policies, audit lines and
    /// error messages: `arn:aws:iam::ACCOUNT:role/serviceaccount/NAME`, where `ACCOUNT` is
    /// [`account_id`] of the ServiceAccount's namespace. A ServiceAccount plays the part of an
    /// IAM role that the workload assumes; the namespace is the account, so it is not repeated in
    /// the path.
    pub fn principal_arn(&self) -> String {
        format!(
            "arn:aws:iam::{}:{ROLE_PATH}{}",
            account_id(&self.namespace),
            self.name
        )
    }

    /// The caller the engine sees: in the ServiceAccount's namespace (its account), with
    /// [`ServiceAccountIdentity::principal_arn`] as principal.
    pub fn to_caller(&self) -> Caller {
        Caller {
            namespace: self.namespace.clone(),
            principal: Principal {
                arn: self.principal_arn(),
                account_id: account_id(&self.namespace),
            },
            access_key_id: None,
            secure_transport: false,
        }
    }

    /// The Kubernetes user name: `system:serviceaccount:NS:NAME`.
    pub fn username(&self) -> String {
        format!(
            "{SERVICE_ACCOUNT_USER_PREFIX}{}:{}",
            self.namespace, self.name
        )
    }

    /// Parses `system:serviceaccount:NS:NAME`, where NS is a DNS label and NAME a DNS
    /// subdomain name, as Kubernetes requires of them.
    fn from_username(username: &str, uid: String) -> Option<Self> {
        let (namespace, name) = username
            .strip_prefix(SERVICE_ACCOUNT_USER_PREFIX)?
            .split_once(':')?;
        (is_dns_label(namespace) && is_dns_subdomain(name)).then(|| Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid,
        })
    }
}

/// The ServiceAccount (namespace, name) behind a caller that [`ServiceAccountIdentity::to_caller`]
/// made, recovered from the caller alone so that any replica can do it: the namespace is the
/// caller's, and the principal must be exactly that namespace's `role/serviceaccount/NAME`.
fn service_account_of(caller: &Caller) -> Option<(&str, &str)> {
    let account = account_id(&caller.namespace);
    if caller.principal.account_id != account {
        return None;
    }
    let name = caller
        .principal
        .arn
        .strip_prefix("arn:aws:iam::")?
        .strip_prefix(account.as_str())?
        .strip_prefix(':')?
        .strip_prefix(ROLE_PATH)?;
    (is_dns_label(&caller.namespace) && is_dns_subdomain(name))
        .then_some((caller.namespace.as_str(), name))
}

fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_label)
}

/// The claims of a JWT that are read before it is reviewed, unverified.
pub struct UnverifiedClaims {
    pub audiences: Vec<String>,
    pub exp: Option<i64>,
}

/// The audiences and `exp` of a JWT, read without checking the signature (whoever reviews the
/// token does that); `None` for a token that is not a JWT with a header naming its algorithm
/// and a claims object.
pub fn unverified_claims(token: &str) -> Option<UnverifiedClaims> {
    #[derive(Deserialize)]
    struct Header {
        #[allow(dead_code)]
        alg: String,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Audience {
        One(String),
        Many(Vec<String>),
    }
    #[derive(Deserialize)]
    struct Claims {
        aud: Option<Audience>,
        exp: Option<serde_json::Number>,
    }
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return None;
    };
    let header = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Header>(&header).ok()?;
    if signature.is_empty()
        || URL_SAFE_NO_PAD
            .decode(signature.trim_end_matches('='))
            .is_err()
    {
        return None;
    }
    let json = Zeroizing::new(URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?);
    let claims: Claims = serde_json::from_slice(&json).ok()?;
    Some(UnverifiedClaims {
        audiences: match claims.aud {
            None => Vec::new(),
            Some(Audience::One(audience)) => vec![audience],
            Some(Audience::Many(audiences)) => audiences,
        },
        exp: claims.exp.and_then(|exp| {
            exp.as_i64()
                .or_else(|| exp.as_f64().and_then(crate::engine::whole_seconds))
        }),
    })
}

/// The `exp` claim of a JWT, in seconds since the Unix epoch, read without checking the
/// signature. Only meaningful for a token the API server has authenticated, which checked it.
/// `None` for a token that is not a JWT or has no `exp` (legacy Secret-based tokens).
pub fn token_expiry(token: &str) -> Option<i64> {
    unverified_claims(token)?.exp
}

/// A small map whose entries expire, holding at most `capacity` of them. When full, expired
/// entries go first, then the one closest to expiry.
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let mut entries = self.entries.lock().ok()?;
        match entries.get(key) {
            Some((value, until)) if Instant::now() < *until => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&self, key: K, value: V, ttl: Duration) {
        let now = Instant::now();
        let Some(until) = now.checked_add(ttl) else {
            return;
        };
        if until <= now {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, until)| now < *until);
            if entries.len() >= self.capacity {
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, (_, until))| *until)
                    .map(|(key, _)| key.clone());
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(key, (value, until));
    }
}

/// POSTs a review object and returns the answer's body. Only the status code of a failure is
/// kept; the body is dropped unread.
async fn post_review(
    client: &Client,
    path: &str,
    body: Vec<u8>,
    review: &'static str,
) -> Result<Zeroizing<Vec<u8>>, KubeIdentityError> {
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(kube::client::Body::from(body))
        .map_err(|_| KubeIdentityError::Unreachable { review })?;
    let response = client
        .send(request)
        .await
        .map_err(|_| KubeIdentityError::Unreachable { review })?;
    let status = response.status();
    if !status.is_success() {
        return Err(KubeIdentityError::Api {
            review,
            status: status.as_u16(),
        });
    }
    let bytes = response
        .into_body()
        .collect_bytes()
        .await
        .map_err(|_| KubeIdentityError::Unreachable { review })?;
    Ok(Zeroizing::new(bytes.to_vec()))
}

/// Checks ServiceAccount tokens with TokenReview.
///
/// Successful reviews are cached for [`TOKEN_REVIEW_CACHE_TTL`] (never past the token's `exp`),
/// at most [`TOKEN_REVIEW_CACHE_CAPACITY`] of them, keyed by the SHA-256 of the token.
pub struct TokenReviewer {
    client: Client,
    audience: String,
    cache: TtlCache<[u8; 32], ServiceAccountIdentity>,
    /// Tokens refused lately, so that a caller repeating a bad token costs the API server one
    /// review per [`REFUSED_TOKEN_CACHE_TTL`], not one per request.
    refused: TtlCache<[u8; 32], ()>,
    /// Bounds the reviews sent to the API server, all callers together.
    reviews: governor::DefaultDirectRateLimiter,
}

impl fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The part of a TokenReview answer that is read. The answer also echoes `spec.token`, which is
/// deliberately not deserialized.
#[derive(Deserialize)]
struct TokenReviewAnswer {
    status: Option<TokenReviewStatus>,
}

impl TokenReviewer {
    /// A reviewer for Coffer's audience, [`DEFAULT_AUDIENCE`].
    pub fn new(client: Client) -> Self {
        Self::with_audience(client, DEFAULT_AUDIENCE)
    }

    /// A reviewer that requires tokens for `audience`.
    pub fn with_audience(client: Client, audience: impl Into<String>) -> Self {
        Self {
            client,
            audience: audience.into(),
            cache: TtlCache::new(TOKEN_REVIEW_CACHE_CAPACITY),
            refused: TtlCache::new(TOKEN_REVIEW_CACHE_CAPACITY),
            reviews: review_limiter(UNCACHED_REVIEWS_PER_SECOND),
        }
    }

    /// Allows `per_second` uncached reviews (with a burst of twice as many) in place of
    /// [`UNCACHED_REVIEWS_PER_SECOND`].
    pub fn with_review_rate(mut self, per_second: u32) -> Self {
        self.reviews = review_limiter(per_second);
        self
    }

    /// Refuses, without a review, a token that cannot be one Coffer accepts: not a JWT, not for
    /// this audience, or with an `exp` that is missing, past, or implausibly far.
    fn precheck(&self, token: &str) -> Result<(), KubeIdentityError> {
        let claims = unverified_claims(token).ok_or(KubeIdentityError::MalformedToken)?;
        if !claims.audiences.contains(&self.audience) {
            return Err(KubeIdentityError::WrongAudience {
                audience: self.audience.clone(),
            });
        }
        let now = SystemClock.now();
        match claims.exp {
            Some(exp)
                if exp > now.saturating_sub(EXPIRY_LEEWAY_SECONDS)
                    && exp <= now.saturating_add(MAX_TOKEN_LIFETIME_SECONDS) =>
            {
                Ok(())
            }
            _ => Err(KubeIdentityError::MalformedToken),
        }
    }

    /// The audience tokens must carry.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The ServiceAccount `token` belongs to. Accepts only a token the API server authenticates,
    /// for this reviewer's audience, whose user is `system:serviceaccount:NS:NAME`.
    pub async fn review(&self, token: &str) -> Result<ServiceAccountIdentity, KubeIdentityError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(KubeIdentityError::MalformedToken);
        }
        let cache_key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(identity) = self.cache.get(&cache_key) {
            return Ok(identity);
        }
        if self.refused.get(&cache_key).is_some() {
            return Err(KubeIdentityError::NotAuthenticated);
        }
        self.precheck(token)?;
        if self.reviews.check().is_err() {
            return Err(KubeIdentityError::Busy);
        }
        let outcome = self.review_uncached(token, cache_key).await;
        if let Err(err) = &outcome
            && !err.is_unavailable()
        {
            self.refused.insert(cache_key, (), REFUSED_TOKEN_CACHE_TTL);
        }
        outcome
    }

    async fn review_uncached(
        &self,
        token: &str,
        cache_key: [u8; 32],
    ) -> Result<ServiceAccountIdentity, KubeIdentityError> {
        let mut review = TokenReview {
            spec: TokenReviewSpec {
                audiences: Some(vec![self.audience.clone()]),
                token: Some(token.to_owned()),
            },
            ..TokenReview::default()
        };
        let body = serde_json::to_vec(&review);
        if let Some(copy) = review.spec.token.as_mut() {
            copy.zeroize();
        }
        let body = body.map_err(|_| KubeIdentityError::Unreachable {
            review: "TokenReview",
        })?;
        let answer = post_review(&self.client, TOKEN_REVIEWS_PATH, body, "TokenReview").await?;
        let answer: TokenReviewAnswer =
            serde_json::from_slice(&answer).map_err(|_| KubeIdentityError::MalformedAnswer {
                review: "TokenReview",
            })?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(KubeIdentityError::NotAuthenticated);
        }
        if !status
            .audiences
            .as_deref()
            .unwrap_or_default()
            .contains(&self.audience)
        {
            return Err(KubeIdentityError::WrongAudience {
                audience: self.audience.clone(),
            });
        }
        let user = status.user.unwrap_or_default();
        let identity = user
            .username
            .as_deref()
            .and_then(|username| {
                ServiceAccountIdentity::from_username(username, user.uid.unwrap_or_default())
            })
            .ok_or(KubeIdentityError::NotServiceAccount)?;

        let ttl = match token_expiry(token) {
            Some(exp) => {
                let left = exp.saturating_sub(SystemClock.now());
                TOKEN_REVIEW_CACHE_TTL.min(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
            }
            None => TOKEN_REVIEW_CACHE_TTL,
        };
        self.cache.insert(cache_key, identity.clone(), ttl);
        Ok(identity)
    }
}

fn review_limiter(per_second: u32) -> governor::DefaultDirectRateLimiter {
    let rate = std::num::NonZeroU32::new(per_second).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = rate.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1));
    governor::RateLimiter::direct(governor::Quota::per_second(rate).allow_burst(burst))
}

/// Bearer callers of the AWS front end: a refused token is `UnrecognizedClientException` (400),
/// an API server that cannot answer is a retryable 503. Neither error nor log carries the token.
#[async_trait]
impl BearerAuthenticator for TokenReviewer {
    async fn authenticate(&self, token: &str) -> Result<Caller, AwsError> {
        match self.review(token).await {
            Ok(identity) => Ok(identity.to_caller()),
            Err(err) if err.is_unavailable() => {
                tracing::warn!(error = %err, "a bearer token could not be reviewed");
                Err(AwsError::unavailable(
                    "The security token could not be checked; try again.",
                ))
            }
            Err(err) => {
                tracing::info!(reason = %err, "a bearer token was refused");
                Err(AwsError::client(
                    "UnrecognizedClientException",
                    "The security token included in the request is invalid.",
                ))
            }
        }
    }
}

/// How long a ServiceAccount's uid, or its absence, is remembered: the longest that
/// temporary credentials outlive the ServiceAccount they were issued to.
pub const SERVICE_ACCOUNT_CACHE_TTL: Duration = Duration::from_secs(10);

const SERVICE_ACCOUNT_CACHE_CAPACITY: usize = 10_000;

/// Who still exists: the uid of a ServiceAccount, so that credentials issued to one that was
/// deleted (and perhaps re-created under the same name) stop working.
#[async_trait]
pub trait ServiceAccountDirectory: Send + Sync + fmt::Debug {
    /// The uid of ServiceAccount `namespace/name`, or `None` when there is no such account.
    async fn uid_of(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, KubeIdentityError>;
}

/// [`ServiceAccountDirectory`] read from the API server (`get` on `serviceaccounts`, metadata
/// only), cached for [`SERVICE_ACCOUNT_CACHE_TTL`].
pub struct ServiceAccountUids {
    client: Client,
    cache: TtlCache<(String, String), Option<String>>,
}

impl fmt::Debug for ServiceAccountUids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountUids").finish_non_exhaustive()
    }
}

impl ServiceAccountUids {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: TtlCache::new(SERVICE_ACCOUNT_CACHE_CAPACITY),
        }
    }
}

#[async_trait]
impl ServiceAccountDirectory for ServiceAccountUids {
    async fn uid_of(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, KubeIdentityError> {
        const REVIEW: &str = "ServiceAccount lookup";
        // Names come from a session token Coffer sealed, but a path is built from them.
        if !is_dns_label(namespace) || !is_dns_subdomain(name) {
            return Ok(None);
        }
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(uid) = self.cache.get(&key) {
            return Ok(uid);
        }
        let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(self.client.clone(), namespace);
        let uid = match accounts.get_metadata_opt(name).await {
            Ok(found) => found.and_then(|account| account.metadata.uid),
            Err(kube::Error::Api(status)) => {
                return Err(KubeIdentityError::Api {
                    review: REVIEW,
                    status: status.code,
                });
            }
            Err(_) => return Err(KubeIdentityError::Unreachable { review: REVIEW }),
        };
        self.cache
            .insert(key, uid.clone(), SERVICE_ACCOUNT_CACHE_TTL);
        Ok(uid)
    }
}

/// The RBAC verb an action needs on `kmskeys`, or `None` for an action that is not a KMS one
/// (which is then denied).
///
/// | action | verb |
/// |---|---|
/// | `kms:Encrypt` | `encrypt` |
/// | `kms:Decrypt` | `decrypt` |
/// | `kms:GenerateDataKey*` | `generatedatakey` |
/// | `kms:ReEncrypt*` | `reencrypt` |
/// | `kms:Sign` | `sign` |
/// | `kms:Verify` | `verify` |
/// | `kms:Describe*`, `kms:Get*`, `kms:List*` (except `kms:GetParametersForImport`) | `describe` |
/// | anything else (`Create*`, `Enable*`, `Disable*`, `Put*`, `Schedule*`, `Cancel*`, `Tag*`, `Untag*`, `Update*`, `Rotate*`, `Import*`, `Delete*`, `GenerateRandom`, ...) | `admin` |
///
/// `kms:GetParametersForImport` starts the import of key material, so it needs `admin` like
/// `kms:ImportKeyMaterial`. Action names are matched without regard to case, as IAM does.
pub fn rbac_verb(action: &str) -> Option<&'static str> {
    let lower = action.to_ascii_lowercase();
    let operation = lower.strip_prefix("kms:")?;
    Some(match operation {
        "encrypt" => "encrypt",
        "decrypt" => "decrypt",
        "sign" => "sign",
        "verify" => "verify",
        "getparametersforimport" => "admin",
        _ if operation.starts_with("generatedatakey") => "generatedatakey",
        _ if operation.starts_with("reencrypt") => "reencrypt",
        _ if ["describe", "get", "list"]
            .iter()
            .any(|prefix| operation.starts_with(prefix)) =>
        {
            "describe"
        }
        _ => "admin",
    })
}

/// The RBAC resource name of a key ARN: the key id of `arn:...:key/ID`, empty for `*` (an
/// account-level action). `None` for anything else, which is then denied.
fn rbac_resource_name(resource_arn: &str) -> Option<String> {
    if resource_arn == "*" {
        return Some(String::new());
    }
    let arn = Arn::parse(resource_arn)?;
    if arn.service != "kms" {
        return None;
    }
    let id = arn.resource.strip_prefix("key/")?;
    (!id.is_empty() && !id.contains('/')).then(|| id.to_owned())
}

/// The RBAC verb a Secrets Manager action needs on `secrets`, or `None` for an action that is
/// not one Coffer knows (which is then denied).
///
/// | action | verb |
/// |---|---|
/// | `GetSecretValue`, `BatchGetSecretValue`, `DescribeSecret`, `ListSecretVersionIds`, `GetResourcePolicy`, `ValidateResourcePolicy` | `get` |
/// | `ListSecrets` | `list` |
/// | `CreateSecret`, `GetRandomPassword` | `create` |
/// | `PutSecretValue`, `UpdateSecret`, `UpdateSecretVersionStage`, `TagResource`, `UntagResource`, `PutResourcePolicy`, `DeleteResourcePolicy`, `RestoreSecret`, `RotateSecret`, `CancelRotateSecret` | `update` |
/// | `DeleteSecret` | `delete` |
///
/// No prefix rule: a new action stays denied until it is given a verb here. Action names are
/// matched without regard to case, as IAM does.
pub fn secrets_rbac_verb(action: &str) -> Option<&'static str> {
    let lower = action.to_ascii_lowercase();
    let operation = lower.strip_prefix("secretsmanager:")?;
    Some(match operation {
        "getsecretvalue"
        | "batchgetsecretvalue"
        | "describesecret"
        | "listsecretversionids"
        | "getresourcepolicy"
        | "validateresourcepolicy" => "get",
        "listsecrets" => "list",
        "createsecret" | "getrandompassword" => "create",
        "putsecretvalue"
        | "updatesecret"
        | "updatesecretversionstage"
        | "tagresource"
        | "untagresource"
        | "putresourcepolicy"
        | "deleteresourcepolicy"
        | "restoresecret"
        | "rotatesecret"
        | "cancelrotatesecret" => "update",
        "deletesecret" => "delete",
        _ => return None,
    })
}

/// The RBAC resource name of a secret ARN of account `account`:
/// `arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX` gives
/// [`resource_name_for`](crate::resources::secret::resource_name_for)`(NAME)`, `*` gives the
/// empty name (a namespace-wide question). `None` for anything else, including a secret of
/// another account: RBAC in the caller's namespace says nothing about another namespace's
/// secrets, only their resource policies do.
fn secret_rbac_name(resource_arn: &str, account: &str) -> Option<String> {
    if resource_arn == "*" {
        return Some(String::new());
    }
    let arn = Arn::parse(resource_arn)?;
    if arn.service != "secretsmanager" || arn.account_id != account {
        return None;
    }
    let (name, suffix) = arn.resource.strip_prefix("secret:")?.rsplit_once('-')?;
    let name_ok = !name.is_empty()
        && name.len() <= MAX_SECRET_NAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/_+=.@-".contains(&c));
    let suffix_ok =
        suffix.len() == SECRET_ARN_SUFFIX_LEN && suffix.bytes().all(|c| c.is_ascii_alphanumeric());
    (name_ok && suffix_ok).then(|| crate::resources::secret::resource_name_for(name))
}

/// The RBAC verb an SSM Parameter Store action needs on `parameters`, or `None` for an action
/// that is not one Coffer knows (which is then denied). `account_wide` is whether it is asked
/// with `*` rather than one parameter's ARN.
///
/// | action | verb |
/// |---|---|
/// | `GetParameter`, `GetParameters`, `GetParameterHistory`, `ListTagsForResource` | `get` |
/// | `GetParametersByPath`, `DescribeParameters` | `get` for one parameter, `list` account-wide |
/// | `PutParameter`, `LabelParameterVersion`, `UnlabelParameterVersion`, `AddTagsToResource`, `RemoveTagsFromResource` | `update` |
/// | `DeleteParameter`, `DeleteParameters` | `delete` |
///
/// The engine asks PutParameter before it reads the parameter, so a new parameter and an
/// overwrite both need `update` on the parameter's name. No prefix rule: a new action stays
/// denied until it is given a verb here. Action names are matched without regard to case, as
/// IAM does.
pub fn parameters_rbac_verb(action: &str, account_wide: bool) -> Option<&'static str> {
    let lower = action.to_ascii_lowercase();
    let operation = lower.strip_prefix("ssm:")?;
    Some(match operation {
        "getparametersbypath" | "describeparameters" if account_wide => "list",
        "getparameter"
        | "getparameters"
        | "getparameterhistory"
        | "listtagsforresource"
        | "getparametersbypath"
        | "describeparameters" => "get",
        "putparameter"
        | "labelparameterversion"
        | "unlabelparameterversion"
        | "addtagstoresource"
        | "removetagsfromresource" => "update",
        "deleteparameter" | "deleteparameters" => "delete",
        _ => return None,
    })
}

/// The parameter name in a parameter ARN of account `account`, read back as the engine does
/// (`Parameters::locate`): `arn:aws:ssm:REGION:ACCOUNT:parameter/REST` is `/REST` when REST
/// holds a `/` (`parameter/app/db/url` is `/app/db/url`), else REST itself (`parameter/plain`
/// is `plain`). The engine writes the ARNs of `/plain` and `plain` alike, so `/plain` is read
/// as `plain` too. `*` gives the empty name (a namespace-wide question). `None` for anything
/// else, including a name the engine refuses and a parameter of another account: RBAC in the
/// caller's namespace says nothing about another namespace's parameters.
fn parameter_name_of(resource_arn: &str, account: &str) -> Option<String> {
    if resource_arn == "*" {
        return Some(String::new());
    }
    let arn = Arn::parse(resource_arn)?;
    if arn.service != "ssm" || arn.account_id != account {
        return None;
    }
    let rest = arn.resource.strip_prefix("parameter/")?;
    let name = if rest.contains('/') {
        format!("/{rest}")
    } else {
        rest.to_owned()
    };
    crate::engine::parameters::validate_name(&name)
        .is_ok()
        .then_some(name)
}

/// What RBAC is asked about one action: a verb on a resource of [`RBAC_GROUP`] and an object
/// name (empty for the whole namespace).
struct Question {
    resource: &'static str,
    verb: &'static str,
    name: String,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    namespace: String,
    service_account: String,
    // `kmskeys`, `secrets` and `parameters` may hold objects of the same name.
    resource: &'static str,
    verb: &'static str,
    name: String,
}

/// Kubernetes mode's [`AccountAuthority`]: asks RBAC with a SubjectAccessReview whether the
/// caller's ServiceAccount may use the `verb` on an object of group `coffer.dev`, in the
/// caller's namespace, with no name for account-level actions:
///
/// - KMS actions: [`rbac_verb`] on `kmskeys/KEY_ID` (or the KmsKey's name, see
///   [`KubernetesAuthority::with_key_names`]);
/// - Secrets Manager actions: [`secrets_rbac_verb`] on `secrets/NAME`, NAME the Secret
///   resource's name for the secret. A secret of another namespace is denied without a review;
///   only its resource policy can grant access to it. `list` and `create` are always asked
///   namespace-wide, the way `kubectl auth can-i create secrets.coffer.dev` asks.
/// - SSM Parameter Store actions: [`parameters_rbac_verb`] on `parameters/NAME`, NAME the
///   Parameter resource's name for the parameter (see
///   [`KubernetesAuthority::with_parameter_names`]). A parameter of another namespace is denied
///   without a review.
///
/// The ServiceAccount is recovered from the caller itself (its namespace, and the name in its
/// `role/serviceaccount/NAME` principal), so no state is shared with the authenticators and any
/// replica decides alike. Callers that are not ServiceAccounts are denied.
///
/// Decisions, allowed or denied, are cached for [`ACCESS_REVIEW_CACHE_TTL`], at most
/// [`ACCESS_REVIEW_CACHE_CAPACITY`] of them. Any API failure denies (fails closed), is logged
/// with its status code only, and is not cached.
pub struct KubernetesAuthority {
    client: Client,
    cache: TtlCache<DecisionKey, bool>,
    names: Option<Arc<dyn KeyNames>>,
    parameter_names: Option<Arc<dyn ParameterNames>>,
}

/// The object name RBAC knows a key by (the KmsKey resource's name), given its namespace and id.
pub trait KeyNames: Send + Sync + 'static {
    fn rbac_name(&self, namespace: &str, key_id: &str) -> String;
}

/// The object name RBAC knows a parameter by: the name of the Parameter resource that declares
/// parameter `parameter_name` of `namespace`, and for a parameter no resource declares,
/// [`parameter_resource_name`](crate::resources::parameter::parameter_resource_name)`(parameter_name)`,
/// the name of the resource the store makes for it.
///
/// `parameter_name` is read back from an ARN, which does not tell `/plain` from `plain`: a
/// name of one level comes without a leading slash. The engine looks for `plain` first, then
/// `/plain`; an implementation that can see which exists should answer in the same order.
pub trait ParameterNames: Send + Sync + 'static {
    fn rbac_name(&self, namespace: &str, parameter_name: &str) -> String;
}

impl fmt::Debug for KubernetesAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesAuthority")
            .finish_non_exhaustive()
    }
}

impl KubernetesAuthority {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: TtlCache::new(ACCESS_REVIEW_CACHE_CAPACITY),
            names: None,
            parameter_names: None,
        }
    }

    /// Asks RBAC about keys by their KmsKey resource's name rather than their key id, so that
    /// `kubectl auth can-i decrypt kmskeys/NAME` matches.
    pub fn with_key_names(mut self, names: Arc<dyn KeyNames>) -> Self {
        self.names = Some(names);
        self
    }

    /// Asks RBAC about parameters by the name of the Parameter resource that declares them,
    /// rather than the name the store would give it, so that `kubectl auth can-i get
    /// parameters.coffer.dev/NAME` matches for declared parameters too.
    pub fn with_parameter_names(mut self, names: Arc<dyn ParameterNames>) -> Self {
        self.parameter_names = Some(names);
        self
    }

    async fn review(&self, key: &DecisionKey) -> Result<bool, KubeIdentityError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(format!(
                    "{SERVICE_ACCOUNT_USER_PREFIX}{}:{}",
                    key.namespace, key.service_account
                )),
                groups: Some(vec![
                    "system:serviceaccounts".to_owned(),
                    format!("system:serviceaccounts:{}", key.namespace),
                    "system:authenticated".to_owned(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(RBAC_GROUP.to_owned()),
                    resource: Some(key.resource.to_owned()),
                    verb: Some(key.verb.to_owned()),
                    name: (!key.name.is_empty()).then(|| key.name.clone()),
                    namespace: Some(key.namespace.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let review_name = "SubjectAccessReview";
        let body = serde_json::to_vec(&review).map_err(|_| KubeIdentityError::Unreachable {
            review: review_name,
        })?;
        let answer =
            post_review(&self.client, SUBJECT_ACCESS_REVIEWS_PATH, body, review_name).await?;
        let answer: SubjectAccessReview =
            serde_json::from_slice(&answer).map_err(|_| KubeIdentityError::MalformedAnswer {
                review: review_name,
            })?;
        Ok(answer
            .status
            .is_some_and(|status| status.allowed && status.denied != Some(true)))
    }

    /// What to ask RBAC about `action` on `resource_arn` for a caller of `namespace`; `None`
    /// denies without asking.
    fn question(&self, namespace: &str, action: &str, resource_arn: &str) -> Option<Question> {
        if let Some(verb) = rbac_verb(action) {
            let id = rbac_resource_name(resource_arn)?;
            let name = match &self.names {
                Some(names) if !id.is_empty() => names.rbac_name(namespace, &id),
                _ => id,
            };
            return Some(Question {
                resource: KMS_KEYS_RESOURCE,
                verb,
                name,
            });
        }
        if let Some(verb) = secrets_rbac_verb(action) {
            let name = secret_rbac_name(resource_arn, &account_id(namespace))?;
            // Listing and creating are about the namespace, never one secret.
            let name = if matches!(verb, "list" | "create") {
                String::new()
            } else {
                name
            };
            return Some(Question {
                resource: SECRETS_RESOURCE,
                verb,
                name,
            });
        }
        let parameter = parameter_name_of(resource_arn, &account_id(namespace))?;
        let verb = parameters_rbac_verb(action, parameter.is_empty())?;
        let name = if parameter.is_empty() {
            parameter
        } else if let Some(names) = &self.parameter_names {
            names.rbac_name(namespace, &parameter)
        } else {
            crate::resources::parameter::parameter_resource_name(&parameter)
        };
        Some(Question {
            resource: PARAMETERS_RESOURCE,
            verb,
            name,
        })
    }
}

#[async_trait]
impl AccountAuthority for KubernetesAuthority {
    async fn allows(&self, caller: &Caller, action: &str, resource_arn: &str) -> bool {
        let Some((namespace, service_account)) = service_account_of(caller) else {
            return false;
        };
        let Some(question) = self.question(namespace, action, resource_arn) else {
            return false;
        };
        let key = DecisionKey {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            resource: question.resource,
            verb: question.verb,
            name: question.name,
        };
        if let Some(allowed) = self.cache.get(&key) {
            return allowed;
        }
        match self.review(&key).await {
            Ok(allowed) => {
                self.cache.insert(key, allowed, ACCESS_REVIEW_CACHE_TTL);
                allowed
            }
            Err(KubeIdentityError::Api { status, .. }) => {
                tracing::warn!(status, "SubjectAccessReview failed; denying");
                false
            }
            Err(err) => {
                tracing::warn!(error = %err, "SubjectAccessReview failed; denying");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use tower_test::mock::{Handle, SendResponse};

    type ApiServer = Handle<Request<Body>, Response<Body>>;

    fn client() -> (Client, ApiServer) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), handle)
    }

    async fn next_post(
        server: &mut ApiServer,
        path: &str,
    ) -> (serde_json::Value, SendResponse<Response<Body>>) {
        let (request, send) = tokio::time::timeout(Duration::from_secs(10), server.next_request())
            .await
            .expect("a request in time")
            .expect("a request");
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri().path(), path);
        let body = request.into_body().collect_bytes().await.unwrap();
        (serde_json::from_slice(&body).unwrap(), send)
    }

    fn respond(send: SendResponse<Response<Body>>, code: u16, body: serde_json::Value) {
        send.send_response(
            Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    }

    /// A TokenReview answer as the API server sends it, echoing the request.
    fn token_review_answer(
        request: &serde_json::Value,
        status: serde_json::Value,
    ) -> serde_json::Value {
        serde_json::json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": request["spec"],
            "status": status,
        })
    }

    fn service_account_status(username: &str) -> serde_json::Value {
        serde_json::json!({
            "authenticated": true,
            "audiences": ["coffer"],
            "user": {
                "username": username,
                "uid": "5a1e1f0b-0c4f-4a57-9c55-0d2b7f6a1a11",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated"],
            },
        })
    }

    fn jwt_with_exp(exp: i64) -> String {
        token_with(serde_json::json!({"aud": ["coffer"], "exp": exp}))
    }

    fn now() -> i64 {
        SystemClock.now()
    }

    use crate::test_support::tokens::service_account_token as token;

    fn token_with(claims: serde_json::Value) -> String {
        crate::test_support::tokens::jwt(&claims)
    }

    async fn review_once(
        status: serde_json::Value,
        token: &str,
    ) -> (
        Result<ServiceAccountIdentity, KubeIdentityError>,
        serde_json::Value,
    ) {
        let (client, mut server) = client();
        let reviewer = TokenReviewer::new(client);
        let answer = tokio::spawn(async move {
            let (request, send) = next_post(&mut server, TOKEN_REVIEWS_PATH).await;
            respond(send, 201, token_review_answer(&request, status));
            request
        });
        let result = reviewer.review(token).await;
        (result, answer.await.unwrap())
    }

    #[tokio::test]
    async fn a_refused_token_is_not_reviewed_again_at_once() {
        let (bad, good) = (token("bad"), token("good"));
        let (client, mut server) = client();
        let reviewer = TokenReviewer::new(client);
        let answers = tokio::spawn(async move {
            let (request, send) = next_post(&mut server, TOKEN_REVIEWS_PATH).await;
            respond(
                send,
                201,
                token_review_answer(&request, serde_json::json!({"authenticated": false})),
            );
            // The next review the server sees is for another token.
            let (request, send) = next_post(&mut server, TOKEN_REVIEWS_PATH).await;
            respond(
                send,
                201,
                token_review_answer(
                    &request,
                    service_account_status("system:serviceaccount:team-a:app"),
                ),
            );
            request
        });
        assert!(matches!(
            reviewer.review(&bad).await,
            Err(KubeIdentityError::NotAuthenticated)
        ));
        assert!(matches!(
            reviewer.review(&bad).await,
            Err(KubeIdentityError::NotAuthenticated)
        ));
        assert!(reviewer.review(&good).await.is_ok());
        assert_eq!(answers.await.unwrap()["spec"]["token"], good.as_str());
    }

    #[tokio::test]
    async fn an_authenticated_service_account_is_identified() {
        let tok1 = token("tok-1");
        let (result, request) = review_once(
            service_account_status("system:serviceaccount:team-a:app"),
            &tok1,
        )
        .await;
        let identity = result.unwrap();
        assert_eq!(
            identity,
            ServiceAccountIdentity {
                namespace: "team-a".into(),
                name: "app".into(),
                uid: "5a1e1f0b-0c4f-4a57-9c55-0d2b7f6a1a11".into(),
            }
        );
        // The request names the token and Coffer's audience.
        assert_eq!(request["kind"], "TokenReview");
        assert_eq!(request["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(request["spec"]["token"], tok1.as_str());
        assert_eq!(request["spec"]["audiences"], serde_json::json!(["coffer"]));

        let caller = identity.to_caller();
        assert_eq!(caller.namespace, "team-a");
        assert_eq!(caller.principal.account_id, account_id("team-a"));
        assert_eq!(
            caller.principal.arn,
            format!(
                "arn:aws:iam::{}:role/serviceaccount/app",
                account_id("team-a")
            )
        );
        assert_eq!(identity.username(), "system:serviceaccount:team-a:app");
        assert_eq!(service_account_of(&caller), Some(("team-a", "app")));
    }

    #[tokio::test]
    async fn an_unauthenticated_token_is_refused() {
        let (result, _) = review_once(
            serde_json::json!({"authenticated": false, "error": "token has expired"}),
            &token("tok-2"),
        )
        .await;
        assert!(
            matches!(result, Err(KubeIdentityError::NotAuthenticated)),
            "{result:?}"
        );
        // A review without any status is no better.
        let (result, _) = review_once(serde_json::Value::Null, &token("tok-2")).await;
        assert!(
            matches!(result, Err(KubeIdentityError::NotAuthenticated)),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_token_for_another_audience_is_refused() {
        let mut status = service_account_status("system:serviceaccount:team-a:app");
        status["audiences"] = serde_json::json!(["https://kubernetes.default.svc"]);
        let (result, _) = review_once(status, &token("tok-3")).await;
        assert!(
            matches!(result, Err(KubeIdentityError::WrongAudience { .. })),
            "{result:?}"
        );

        let mut status = service_account_status("system:serviceaccount:team-a:app");
        status.as_object_mut().unwrap().remove("audiences");
        let (result, _) = review_once(status, &token("tok-3")).await;
        assert!(
            matches!(result, Err(KubeIdentityError::WrongAudience { .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_user_that_is_not_a_service_account_is_refused() {
        for username in [
            "alice",
            "system:admin",
            "system:node:worker-1",
            "system:serviceaccount:team-a",
            "system:serviceaccount::app",
            "system:serviceaccount:team-a:",
            "system:serviceaccount:team-a:app:extra",
            "system:serviceaccount:Team-A:app",
        ] {
            let (result, _) = review_once(service_account_status(username), &token("tok-4")).await;
            assert!(
                matches!(result, Err(KubeIdentityError::NotServiceAccount)),
                "{username}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn api_failures_are_unavailable_and_say_nothing_of_the_token() {
        let secret = token("very-secret-token");
        let (client, mut server) = client();
        let reviewer = TokenReviewer::new(client);
        tokio::spawn(async move {
            let (_, send) = next_post(&mut server, TOKEN_REVIEWS_PATH).await;
            respond(
                send,
                403,
                serde_json::json!({"kind": "Status", "code": 403}),
            );
            let (_, send) = next_post(&mut server, TOKEN_REVIEWS_PATH).await;
            respond(send, 201, serde_json::json!("not a review"));
        });
        let err = reviewer.review(&secret).await.unwrap_err();
        assert!(err.is_unavailable());
        assert!(matches!(err, KubeIdentityError::Api { status: 403, .. }));
        let err = reviewer.review(&secret).await.unwrap_err();
        assert!(
            matches!(err, KubeIdentityError::MalformedAnswer { .. }),
            "{err:?}"
        );
        for shown in [err.to_string(), format!("{err:?}"), format!("{reviewer:?}")] {
            assert!(!shown.contains(&secret), "{shown}");
        }
        // Refused without a request at all.
        assert!(matches!(
            reviewer.review("").await,
            Err(KubeIdentityError::MalformedToken)
        ));
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            reviewer.review(&long).await,
            Err(KubeIdentityError::MalformedToken)
        ));
    }

    /// A mocked API server that authenticates every token, and counts the reviews it answered.
    fn counting_api_server(
        mut server: ApiServer,
    ) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = server.next_request().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = request.into_body().collect_bytes().await.unwrap();
                let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
                respond(
                    send,
                    201,
                    token_review_answer(
                        &request,
                        service_account_status("system:serviceaccount:team-a:app"),
                    ),
                );
            }
        });
        requests
    }

    #[tokio::test]
    async fn tokens_that_cannot_be_accepted_are_refused_without_a_review() {
        let (client, server) = client();
        let requests = counting_api_server(server);
        let reviewer = TokenReviewer::new(client);
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD
                .encode(serde_json::json!({"aud": "coffer", "exp": now() + 60}).to_string())
        );
        let no_alg = format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT"}"#),
            URL_SAFE_NO_PAD
                .encode(serde_json::json!({"aud": "coffer", "exp": now() + 60}).to_string())
        );
        let malformed = [
            "opaque-legacy-token".to_owned(),
            "a.b.c".to_owned(),
            unsigned,
            no_alg,
            // Expired (past the leeway), without an expiry, or living implausibly long.
            token_with(serde_json::json!({"aud": "coffer", "exp": now() - 3600})),
            token_with(serde_json::json!({"aud": "coffer"})),
            token_with(serde_json::json!({"aud": "coffer", "exp": now() + 10 * 366 * 86400})),
        ];
        for bad in &malformed {
            let result = reviewer.review(bad).await;
            assert!(
                matches!(result, Err(KubeIdentityError::MalformedToken)),
                "{bad}: {result:?}"
            );
        }
        for other_audience in [
            token_with(serde_json::json!({"exp": now() + 60})),
            token_with(
                serde_json::json!({"aud": "https://kubernetes.default.svc", "exp": now() + 60}),
            ),
            token_with(serde_json::json!({"aud": ["api", "vault"], "exp": now() + 60})),
        ] {
            let result = reviewer.review(&other_audience).await;
            assert!(
                matches!(result, Err(KubeIdentityError::WrongAudience { .. })),
                "{result:?}"
            );
        }
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 0);
        // A plausible token, with Coffer among its audiences, is reviewed.
        let plausible =
            token_with(serde_json::json!({"aud": ["api", "coffer"], "exp": now() + 60}));
        assert!(reviewer.review(&plausible).await.is_ok());
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn reviews_beyond_the_rate_are_refused_as_busy_without_a_request() {
        let (client, server) = client();
        let requests = counting_api_server(server);
        // One a second, with a burst of two.
        let reviewer = TokenReviewer::new(client).with_review_rate(1);
        assert!(reviewer.review(&token("first")).await.is_ok());
        assert!(reviewer.review(&token("second")).await.is_ok());
        let err = reviewer.review(&token("third")).await.unwrap_err();
        assert!(matches!(err, KubeIdentityError::Busy), "{err:?}");
        assert!(err.is_unavailable(), "a busy reviewer is a retryable 503");
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Cached answers are not limited.
        assert!(reviewer.review(&token("first")).await.is_ok());
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn service_account_uids_are_read_from_the_api_and_cached_briefly() {
        let (client, mut server) = client();
        let uids = ServiceAccountUids::new(client);
        let served = tokio::spawn(async move {
            let mut seen = Vec::new();
            // app exists; gone does not; then app again, after the cache expired, re-created.
            for (uid, code) in [
                (Some("uid-1"), 200),
                (None, 404),
                (Some("uid-2"), 200),
                (None, 500),
            ] {
                let (request, send) = server.next_request().await.unwrap();
                assert_eq!(request.method(), Method::GET);
                seen.push(request.uri().path().to_owned());
                let body = match uid {
                    Some(uid) => serde_json::json!({
                        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": {"name": "app", "namespace": "team-a", "uid": uid},
                    }),
                    None => serde_json::json!({
                        "kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": if code == 404 { "NotFound" } else { "InternalError" },
                        "code": code,
                    }),
                };
                respond(send, code, body);
            }
            seen
        });
        assert_eq!(
            uids.uid_of("team-a", "app").await.unwrap().as_deref(),
            Some("uid-1")
        );
        assert_eq!(uids.uid_of("team-a", "gone").await.unwrap(), None);
        // Both answers are cached: no request for either.
        assert_eq!(
            uids.uid_of("team-a", "app").await.unwrap().as_deref(),
            Some("uid-1")
        );
        assert_eq!(uids.uid_of("team-a", "gone").await.unwrap(), None);
        // Names that are no ServiceAccount's are not looked up at all.
        assert_eq!(uids.uid_of("Team A", "app").await.unwrap(), None);
        assert_eq!(uids.uid_of("team-a", "../../secrets").await.unwrap(), None);
        tokio::time::advance(SERVICE_ACCOUNT_CACHE_TTL + Duration::from_secs(1)).await;
        assert_eq!(
            uids.uid_of("team-a", "app").await.unwrap().as_deref(),
            Some("uid-2")
        );
        let err = uids.uid_of("team-a", "other").await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert_eq!(
            served.await.unwrap(),
            [
                "/api/v1/namespaces/team-a/serviceaccounts/app",
                "/api/v1/namespaces/team-a/serviceaccounts/gone",
                "/api/v1/namespaces/team-a/serviceaccounts/app",
                "/api/v1/namespaces/team-a/serviceaccounts/other",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_review_makes_no_second_request() {
        let (client, server) = client();
        let reviewer = TokenReviewer::new(client);
        let requests = counting_api_server(server);
        let count = || requests.load(std::sync::atomic::Ordering::SeqCst);
        let (tok5, tok6) = (token("tok-5"), token("tok-6"));
        let first = reviewer.review(&tok5).await.unwrap();
        assert_eq!(count(), 1);
        let second = reviewer.review(&tok5).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(count(), 1, "the cached review is reused");
        // Another token is another review.
        reviewer.review(&tok6).await.unwrap();
        assert_eq!(count(), 2);
        // The cache forgets after its lifetime.
        tokio::time::advance(TOKEN_REVIEW_CACHE_TTL + Duration::from_secs(1)).await;
        reviewer.review(&tok5).await.unwrap();
        assert_eq!(count(), 3);
        // A token about to expire is cached no longer than it lives.
        let short = jwt_with_exp(now() + 5);
        reviewer.review(&short).await.unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        reviewer.review(&short).await.unwrap();
        assert_eq!(count(), 5);
        // The cache holds token hashes, never tokens.
        let cache = reviewer.cache.entries.lock().unwrap();
        assert!(cache.contains_key(&<[u8; 32]>::from(Sha256::digest(tok6.as_bytes()))));
    }

    #[test]
    fn token_expiry_reads_the_exp_claim() {
        assert_eq!(
            token_expiry(&jwt_with_exp(1_900_000_000)),
            Some(1_900_000_000)
        );
        let no_exp = format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(b"{}"),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#)
        );
        assert_eq!(token_expiry(&no_exp), None);
        for bad in ["", "opaque-token", "a.b", "a.!!!.c", "a.b.c.d"] {
            assert_eq!(token_expiry(bad), None, "{bad}");
        }
    }

    #[test]
    fn ttl_cache_stays_bounded() {
        let cache = TtlCache::new(3);
        for i in 0..10u32 {
            cache.insert(i, i, Duration::from_secs(60 + u64::from(i)));
        }
        let entries = cache.entries.lock().unwrap();
        assert_eq!(entries.len(), 3);
        // The entries closest to expiry went first.
        assert!(entries.contains_key(&9) && entries.contains_key(&8) && entries.contains_key(&7));
    }

    #[test]
    fn actions_map_to_rbac_verbs() {
        for (action, verb) in [
            ("kms:Encrypt", "encrypt"),
            ("kms:Decrypt", "decrypt"),
            ("kms:GenerateDataKey", "generatedatakey"),
            ("kms:GenerateDataKeyWithoutPlaintext", "generatedatakey"),
            ("kms:GenerateDataKeyPair", "generatedatakey"),
            ("kms:ReEncryptFrom", "reencrypt"),
            ("kms:ReEncryptTo", "reencrypt"),
            ("kms:Sign", "sign"),
            ("kms:Verify", "verify"),
            ("kms:DescribeKey", "describe"),
            ("kms:GetPublicKey", "describe"),
            ("kms:GetKeyPolicy", "describe"),
            ("kms:ListKeys", "describe"),
            ("kms:ListAliases", "describe"),
            ("kms:CreateKey", "admin"),
            ("kms:EnableKey", "admin"),
            ("kms:DisableKeyRotation", "admin"),
            ("kms:PutKeyPolicy", "admin"),
            ("kms:ScheduleKeyDeletion", "admin"),
            ("kms:CancelKeyDeletion", "admin"),
            ("kms:TagResource", "admin"),
            ("kms:UntagResource", "admin"),
            ("kms:UpdateAlias", "admin"),
            ("kms:RotateKeyOnDemand", "admin"),
            ("kms:ImportKeyMaterial", "admin"),
            ("kms:GetParametersForImport", "admin"),
            ("kms:DeleteAlias", "admin"),
            ("kms:GenerateRandom", "admin"),
            ("KMS:decrypt", "decrypt"),
        ] {
            assert_eq!(rbac_verb(action), Some(verb), "{action}");
        }
        assert_eq!(rbac_verb("secretsmanager:GetSecretValue"), None);
        assert_eq!(rbac_verb("Decrypt"), None);
    }

    #[test]
    fn key_arns_map_to_resource_names() {
        let arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(
            rbac_resource_name(arn).as_deref(),
            Some("1234abcd-12ab-34cd-56ef-1234567890ab")
        );
        assert_eq!(rbac_resource_name("*").as_deref(), Some(""));
        for bad in [
            "arn:aws:kms:us-east-1:123456789012:alias/app",
            "arn:aws:kms:us-east-1:123456789012:key/",
            "arn:aws:s3:::bucket/key/x",
            "key/abc",
            "",
        ] {
            assert_eq!(rbac_resource_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn secrets_actions_map_to_rbac_verbs() {
        for (action, verb) in [
            ("secretsmanager:GetSecretValue", "get"),
            ("secretsmanager:BatchGetSecretValue", "get"),
            ("secretsmanager:DescribeSecret", "get"),
            ("secretsmanager:ListSecretVersionIds", "get"),
            ("secretsmanager:GetResourcePolicy", "get"),
            ("secretsmanager:ValidateResourcePolicy", "get"),
            ("secretsmanager:ListSecrets", "list"),
            ("secretsmanager:CreateSecret", "create"),
            ("secretsmanager:GetRandomPassword", "create"),
            ("secretsmanager:PutSecretValue", "update"),
            ("secretsmanager:UpdateSecret", "update"),
            ("secretsmanager:UpdateSecretVersionStage", "update"),
            ("secretsmanager:TagResource", "update"),
            ("secretsmanager:UntagResource", "update"),
            ("secretsmanager:PutResourcePolicy", "update"),
            ("secretsmanager:DeleteResourcePolicy", "update"),
            ("secretsmanager:RestoreSecret", "update"),
            ("secretsmanager:RotateSecret", "update"),
            ("secretsmanager:CancelRotateSecret", "update"),
            ("secretsmanager:DeleteSecret", "delete"),
            ("SecretsManager:getsecretvalue", "get"),
        ] {
            assert_eq!(secrets_rbac_verb(action), Some(verb), "{action}");
        }
        for unknown in [
            "secretsmanager:*",
            "secretsmanager:Get*",
            "secretsmanager:StopReplicationToReplica",
            "secretsmanager:ReplicateSecretToRegions",
            "secretsmanager:",
            "kms:Decrypt",
            "GetSecretValue",
        ] {
            assert_eq!(secrets_rbac_verb(unknown), None, "{unknown}");
        }
        // Every action the engine asks about has a verb.
        for action in [
            "CreateSecret",
            "PutSecretValue",
            "GetSecretValue",
            "DescribeSecret",
            "ListSecrets",
            "ListSecretVersionIds",
            "UpdateSecret",
            "UpdateSecretVersionStage",
            "DeleteSecret",
            "RestoreSecret",
            "TagResource",
            "UntagResource",
            "PutResourcePolicy",
            "GetResourcePolicy",
            "DeleteResourcePolicy",
            "ValidateResourcePolicy",
        ] {
            let action = format!("secretsmanager:{action}");
            assert!(secrets_rbac_verb(&action).is_some(), "{action}");
        }
    }

    #[test]
    fn secret_arns_map_to_resource_names() {
        let account = account_id("team-a");
        let arn = |resource: &str| format!("arn:aws:secretsmanager:us-east-1:{account}:{resource}");
        assert_eq!(secret_rbac_name("*", &account).as_deref(), Some(""));
        assert_eq!(
            secret_rbac_name(&arn("secret:app-db-AbC123"), &account).as_deref(),
            Some("app-db")
        );
        assert_eq!(
            secret_rbac_name(&arn("secret:db.example-x1Y2z3"), &account).as_deref(),
            Some("db.example")
        );
        let derived = secret_rbac_name(&arn("secret:prod/db/password-AbC123"), &account).unwrap();
        assert_eq!(
            derived,
            crate::resources::secret::resource_name_for("prod/db/password")
        );
        assert!(derived.starts_with("sm-"), "{derived}");
        // A secret named like a derived name is not its own resource name.
        assert_ne!(
            secret_rbac_name(&arn("secret:sm-x-AbC123"), &account).as_deref(),
            Some("sm-x")
        );
        for bad in [
            arn("secret:app-db"),
            arn("secret:app-db-AbC12"),
            arn("secret:app-db-AbC1234"),
            arn("secret:app-db-AbC12!"),
            arn("secret:-AbC123"),
            arn("secret:app db-AbC123"),
            arn("secret:app:db-AbC123"),
            arn(&format!("secret:{}-AbC123", "a".repeat(513))),
            arn("key/app-db-AbC123"),
            format!("arn:aws:kms:us-east-1:{account}:secret:app-db-AbC123"),
            format!(
                "arn:aws:secretsmanager:us-east-1:{}:secret:app-db-AbC123",
                account_id("team-b")
            ),
            "secret:app-db-AbC123".to_owned(),
            String::new(),
        ] {
            assert_eq!(secret_rbac_name(&bad, &account), None, "{bad}");
        }
    }

    /// Every action the Parameter Store engine asks about, with the verb it needs on one
    /// parameter.
    const PARAMETER_ACTIONS: [(&str, &str); 13] = [
        ("ssm:GetParameter", "get"),
        ("ssm:GetParameters", "get"),
        ("ssm:GetParametersByPath", "get"),
        ("ssm:DescribeParameters", "get"),
        ("ssm:GetParameterHistory", "get"),
        ("ssm:ListTagsForResource", "get"),
        ("ssm:PutParameter", "update"),
        ("ssm:LabelParameterVersion", "update"),
        ("ssm:UnlabelParameterVersion", "update"),
        ("ssm:AddTagsToResource", "update"),
        ("ssm:RemoveTagsFromResource", "update"),
        ("ssm:DeleteParameter", "delete"),
        ("ssm:DeleteParameters", "delete"),
    ];

    #[test]
    fn parameter_actions_map_to_rbac_verbs() {
        for (action, verb) in PARAMETER_ACTIONS {
            assert_eq!(parameters_rbac_verb(action, false), Some(verb), "{action}");
            // Account-wide, the listing actions list; the rest ask their verb of every parameter.
            let account_wide = match action {
                "ssm:GetParametersByPath" | "ssm:DescribeParameters" => "list",
                _ => verb,
            };
            assert_eq!(
                parameters_rbac_verb(action, true),
                Some(account_wide),
                "{action}"
            );
        }
        assert_eq!(parameters_rbac_verb("SSM:getparameter", false), Some("get"));
        for unknown in [
            "ssm:*",
            "ssm:Get*",
            "ssm:GetParameter*",
            "ssm:SendCommand",
            "ssm:StartSession",
            "ssm:DeleteParametersByPath",
            "ssm:",
            "secretsmanager:GetSecretValue",
            "kms:Decrypt",
            "GetParameter",
        ] {
            assert_eq!(parameters_rbac_verb(unknown, false), None, "{unknown}");
            assert_eq!(parameters_rbac_verb(unknown, true), None, "{unknown}");
        }
    }

    #[test]
    fn every_parameter_action_the_engine_asks_about_has_a_verb() {
        let source = include_str!("../engine/parameters/operations.rs");
        let asked: std::collections::BTreeSet<&str> = source
            .split('"')
            .filter(|text| text.starts_with("ssm:") && text.len() > 4)
            .collect();
        assert!(asked.len() >= PARAMETER_ACTIONS.len(), "{asked:?}");
        for action in asked {
            assert!(
                PARAMETER_ACTIONS.iter().any(|(known, _)| *known == action),
                "{action} has no verb"
            );
        }
    }

    #[test]
    fn parameter_arns_map_to_parameter_names() {
        let account = account_id("team-a");
        let arn = |resource: &str| format!("arn:aws:ssm:us-east-1:{account}:{resource}");
        assert_eq!(parameter_name_of("*", &account).as_deref(), Some(""));
        for (resource, name) in [
            ("parameter/app/db/url", "/app/db/url"),
            ("parameter/App/DB_url", "/App/DB_url"),
            ("parameter/plain", "plain"),
            ("parameter/Plain_Name.v2", "Plain_Name.v2"),
        ] {
            assert_eq!(
                parameter_name_of(&arn(resource), &account).as_deref(),
                Some(name),
                "{resource}"
            );
        }
        // The engine's ARN of `/plain` is that of `plain`, and reads back as `plain`.
        let engine_arn = |name: &str| {
            Arn {
                service: "ssm".into(),
                region: "us-east-1".into(),
                account_id: account.clone(),
                resource: format!("parameter/{}", name.strip_prefix('/').unwrap_or(name)),
            }
            .to_string()
        };
        for (name, read) in [
            ("/app/db/url", "/app/db/url"),
            ("plain", "plain"),
            ("/plain", "plain"),
        ] {
            assert_eq!(
                parameter_name_of(&engine_arn(name), &account).as_deref(),
                Some(read),
                "{name}"
            );
        }
        for bad in [
            arn("parameter/"),
            arn("parameter//app"),
            arn("parameter/app/"),
            arn("parameter/app//db"),
            arn("parameter/app:3"),
            arn("parameter/app db"),
            arn("parameter/aws/service/x"),
            arn("parameter/ssm-thing"),
            arn(&format!("parameter/{}", "a/".repeat(15) + "a")),
            arn(&format!("parameter/{}", "a".repeat(1012))),
            arn("document/app"),
            arn("app"),
            format!("arn:aws:kms:us-east-1:{account}:parameter/app"),
            format!(
                "arn:aws:ssm:us-east-1:{}:parameter/app/db/url",
                account_id("team-b")
            ),
            "parameter/app".to_owned(),
            String::new(),
        ] {
            assert_eq!(parameter_name_of(&bad, &account), None, "{bad}");
        }
    }

    mod access_reviews {
        use super::*;

        const KEY_ARN: &str =
            "arn:aws:kms:us-east-1:111122223333:key/0f3c1d52-7a0e-4c39-9d8e-3b1a2c4d5e6f";
        const KEY_ID: &str = "0f3c1d52-7a0e-4c39-9d8e-3b1a2c4d5e6f";

        fn caller() -> Caller {
            ServiceAccountIdentity {
                namespace: "team-a".into(),
                name: "app".into(),
                uid: String::new(),
            }
            .to_caller()
        }

        fn sar_answer(request: &serde_json::Value, status: serde_json::Value) -> serde_json::Value {
            serde_json::json!({
                "kind": "SubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "spec": request["spec"],
                "status": status,
            })
        }

        async fn decide(
            caller: &Caller,
            action: &str,
            resource: &str,
            code: u16,
            status: serde_json::Value,
        ) -> (bool, serde_json::Value) {
            let (client, mut server) = client();
            let authority = KubernetesAuthority::new(client);
            let answer = tokio::spawn(async move {
                let (request, send) = next_post(&mut server, SUBJECT_ACCESS_REVIEWS_PATH).await;
                if code == 201 {
                    respond(send, 201, sar_answer(&request, status));
                } else {
                    respond(
                        send,
                        code,
                        serde_json::json!({"kind": "Status", "code": code}),
                    );
                }
                request
            });
            let allowed = authority.allows(caller, action, resource).await;
            (allowed, answer.await.unwrap())
        }

        #[tokio::test]
        async fn the_review_names_verb_resource_group_name_namespace_and_user() {
            let (allowed, request) = decide(
                &caller(),
                "kms:Decrypt",
                KEY_ARN,
                201,
                serde_json::json!({"allowed": true}),
            )
            .await;
            assert!(allowed);
            assert_eq!(request["kind"], "SubjectAccessReview");
            assert_eq!(request["apiVersion"], "authorization.k8s.io/v1");
            let spec = &request["spec"];
            assert_eq!(spec["user"], "system:serviceaccount:team-a:app");
            assert_eq!(
                spec["groups"],
                serde_json::json!([
                    "system:serviceaccounts",
                    "system:serviceaccounts:team-a",
                    "system:authenticated"
                ])
            );
            let attributes = &spec["resourceAttributes"];
            assert_eq!(attributes["verb"], "decrypt");
            assert_eq!(attributes["resource"], "kmskeys");
            assert_eq!(attributes["group"], "coffer.dev");
            assert_eq!(attributes["name"], KEY_ID);
            assert_eq!(attributes["namespace"], "team-a");
        }

        #[tokio::test]
        async fn account_level_actions_name_no_key() {
            let (allowed, request) = decide(
                &caller(),
                "kms:CreateKey",
                "*",
                201,
                serde_json::json!({"allowed": true}),
            )
            .await;
            assert!(allowed);
            let attributes = &request["spec"]["resourceAttributes"];
            assert_eq!(attributes["verb"], "admin");
            assert!(attributes.get("name").is_none(), "{attributes}");
            assert_eq!(attributes["namespace"], "team-a");
        }

        #[tokio::test]
        async fn denied_and_failed_reviews_deny() {
            let (allowed, _) = decide(
                &caller(),
                "kms:Encrypt",
                KEY_ARN,
                201,
                serde_json::json!({"allowed": false, "reason": "no RBAC rule"}),
            )
            .await;
            assert!(!allowed);
            let (allowed, _) = decide(
                &caller(),
                "kms:Encrypt",
                KEY_ARN,
                201,
                serde_json::json!({"allowed": true, "denied": true}),
            )
            .await;
            assert!(!allowed, "denied wins over allowed");
            let (allowed, _) = decide(
                &caller(),
                "kms:Encrypt",
                KEY_ARN,
                500,
                serde_json::Value::Null,
            )
            .await;
            assert!(!allowed, "an API failure fails closed");
            let (allowed, _) = decide(
                &caller(),
                "kms:Encrypt",
                KEY_ARN,
                201,
                serde_json::Value::Null,
            )
            .await;
            assert!(!allowed, "an answer without status denies");
        }

        #[tokio::test]
        async fn callers_that_are_not_service_accounts_are_denied_without_asking() {
            let (client, mut server) = client();
            let authority = KubernetesAuthority::new(client);
            let user = Caller {
                namespace: "team-a".into(),
                principal: Principal {
                    arn: crate::aws::identity::user_arn("team-a", "app"),
                    account_id: account_id("team-a"),
                },
                access_key_id: None,
                secure_transport: false,
            };
            // A principal from another account than the caller's namespace.
            let mut foreign = caller();
            foreign.namespace = "team-b".into();
            for stranger in [user, foreign] {
                assert!(!authority.allows(&stranger, "kms:Decrypt", KEY_ARN).await);
            }
            // Nor is a non-KMS action or a resource that is not a key.
            assert!(!authority.allows(&caller(), "s3:GetObject", KEY_ARN).await);
            assert!(
                !authority
                    .allows(&caller(), "kms:Decrypt", "arn:aws:kms:us-east-1:1:alias/x")
                    .await
            );
            drop(authority);
            assert!(server.next_request().await.is_none(), "no review was sent");
        }

        fn secret_arn(namespace: &str, name: &str) -> String {
            format!(
                "arn:aws:secretsmanager:us-east-1:{}:secret:{name}-AbC123",
                account_id(namespace)
            )
        }

        #[tokio::test]
        async fn a_secret_review_asks_get_on_secrets_by_resource_name() {
            let (allowed, request) = decide(
                &caller(),
                "secretsmanager:GetSecretValue",
                &secret_arn("team-a", "app-db"),
                201,
                serde_json::json!({"allowed": true}),
            )
            .await;
            assert!(allowed);
            let spec = &request["spec"];
            assert_eq!(spec["user"], "system:serviceaccount:team-a:app");
            let attributes = &spec["resourceAttributes"];
            assert_eq!(attributes["verb"], "get");
            assert_eq!(attributes["resource"], "secrets");
            assert_eq!(attributes["group"], "coffer.dev");
            assert_eq!(attributes["name"], "app-db");
            assert_eq!(attributes["namespace"], "team-a");
        }

        #[tokio::test]
        async fn secret_names_that_are_not_resource_names_are_asked_by_their_derived_name() {
            let (allowed, request) = decide(
                &caller(),
                "secretsmanager:PutSecretValue",
                &secret_arn("team-a", "prod/db/Password"),
                201,
                serde_json::json!({"allowed": false}),
            )
            .await;
            assert!(!allowed);
            let attributes = &request["spec"]["resourceAttributes"];
            assert_eq!(attributes["verb"], "update");
            assert_eq!(attributes["resource"], "secrets");
            assert_eq!(
                attributes["name"].as_str(),
                Some(crate::resources::secret::resource_name_for("prod/db/Password").as_str())
            );
            assert!(
                attributes["name"]
                    .as_str()
                    .is_some_and(|name| name.starts_with("sm-prod-db-password-")),
                "{attributes}"
            );
        }

        #[tokio::test]
        async fn account_level_secret_actions_name_no_secret() {
            for (action, verb) in [
                ("secretsmanager:ListSecrets", "list"),
                ("secretsmanager:CreateSecret", "create"),
                ("secretsmanager:GetRandomPassword", "create"),
                ("secretsmanager:ValidateResourcePolicy", "get"),
            ] {
                let (allowed, request) = decide(
                    &caller(),
                    action,
                    "*",
                    201,
                    serde_json::json!({"allowed": true}),
                )
                .await;
                assert!(allowed, "{action}");
                let attributes = &request["spec"]["resourceAttributes"];
                assert_eq!(attributes["verb"], verb, "{action}");
                assert_eq!(attributes["resource"], "secrets", "{action}");
                assert!(attributes.get("name").is_none(), "{action}: {attributes}");
                assert_eq!(attributes["namespace"], "team-a", "{action}");
            }
            // Listing and creating are asked namespace-wide even when a secret is named.
            let (_, request) = decide(
                &caller(),
                "secretsmanager:CreateSecret",
                &secret_arn("team-a", "app-db"),
                201,
                serde_json::json!({"allowed": true}),
            )
            .await;
            let attributes = &request["spec"]["resourceAttributes"];
            assert_eq!(attributes["verb"], "create");
            assert!(attributes.get("name").is_none(), "{attributes}");
        }

        #[tokio::test]
        async fn secrets_of_other_namespaces_and_unknown_actions_are_denied_without_asking() {
            let (client, mut server) = client();
            let authority = KubernetesAuthority::new(client);
            for action in [
                "secretsmanager:GetSecretValue",
                "secretsmanager:DescribeSecret",
                "secretsmanager:ListSecrets",
                "secretsmanager:CreateSecret",
                "secretsmanager:DeleteSecret",
            ] {
                assert!(
                    !authority
                        .allows(&caller(), action, &secret_arn("team-b", "app-db"))
                        .await,
                    "{action}"
                );
            }
            for action in [
                "secretsmanager:*",
                "secretsmanager:ReplicateSecretToRegions",
                "secretsmanager:RemoveRegionsFromReplication",
                "secretsmanager:StopReplicationToReplica",
            ] {
                assert!(!authority.allows(&caller(), action, "*").await, "{action}");
                assert!(
                    !authority
                        .allows(&caller(), action, &secret_arn("team-a", "app-db"))
                        .await,
                    "{action}"
                );
            }
            // Nor is a resource that is not a secret, or a secret for a KMS action.
            for resource in [
                "arn:aws:kms:us-east-1:111122223333:key/0f3c1d52-7a0e-4c39-9d8e-3b1a2c4d5e6f"
                    .to_owned(),
                format!(
                    "arn:aws:secretsmanager:us-east-1:{}:secret:app-db",
                    account_id("team-a")
                ),
            ] {
                assert!(
                    !authority
                        .allows(&caller(), "secretsmanager:GetSecretValue", &resource)
                        .await,
                    "{resource}"
                );
            }
            assert!(
                !authority
                    .allows(&caller(), "kms:Decrypt", &secret_arn("team-a", "app-db"))
                    .await
            );
            drop(authority);
            assert!(server.next_request().await.is_none(), "no review was sent");
        }

        #[tokio::test]
        async fn secret_decisions_are_cached_apart_from_key_decisions() {
            struct SameName;
            impl KeyNames for SameName {
                fn rbac_name(&self, _namespace: &str, _key_id: &str) -> String {
                    "app-db".to_owned()
                }
            }
            let (client, mut server) = client();
            let authority = KubernetesAuthority::new(client).with_key_names(Arc::new(SameName));
            let server = tokio::spawn(async move {
                let mut asked = Vec::new();
                for allowed in [true, false] {
                    let (request, send) = next_post(&mut server, SUBJECT_ACCESS_REVIEWS_PATH).await;
                    let attributes = &request["spec"]["resourceAttributes"];
                    asked.push(format!(
                        "{} {}/{}",
                        attributes["verb"].as_str().unwrap_or_default(),
                        attributes["resource"].as_str().unwrap_or_default(),
                        attributes["name"].as_str().unwrap_or_default()
                    ));
                    respond(
                        send,
                        201,
                        sar_answer(&request, serde_json::json!({"allowed": allowed})),
                    );
                }
                (server, asked)
            });
            let secret = secret_arn("team-a", "app-db");
            assert!(
                authority
                    .allows(&caller(), "secretsmanager:GetSecretValue", &secret)
                    .await
            );
            // Same verb, same name: answered from the cache.
            assert!(
                authority
                    .allows(&caller(), "secretsmanager:DescribeSecret", &secret)
                    .await
            );
            assert!(!authority.allows(&caller(), "kms:Decrypt", KEY_ARN).await);
            assert!(!authority.allows(&caller(), "kms:Decrypt", KEY_ARN).await);
            let (mut server, asked) = server.await.unwrap();
            assert_eq!(asked, ["get secrets/app-db", "decrypt kmskeys/app-db"]);
            drop(authority);
            assert!(
                server.next_request().await.is_none(),
                "exactly two reviews were sent"
            );
        }

        fn parameter_arn(namespace: &str, name: &str) -> String {
            format!(
                "arn:aws:ssm:us-east-1:{}:parameter/{}",
                account_id(namespace),
                name.strip_prefix('/').unwrap_or(name)
            )
        }

        #[tokio::test]
        async fn a_parameter_review_asks_get_on_parameters_by_resource_name() {
            let (allowed, request) = decide(
                &caller(),
                "ssm:GetParameter",
                &parameter_arn("team-a", "/app/db/url"),
                201,
                serde_json::json!({"allowed": true}),
            )
            .await;
            assert!(allowed);
            let spec = &request["spec"];
            assert_eq!(spec["user"], "system:serviceaccount:team-a:app");
            let attributes = &spec["resourceAttributes"];
            assert_eq!(attributes["verb"], "get");
            assert_eq!(attributes["resource"], "parameters");
            assert_eq!(attributes["group"], "coffer.dev");
            assert_eq!(attributes["name"], "app.db.url");
            assert_eq!(attributes["namespace"], "team-a");
        }

        #[tokio::test]
        async fn parameter_names_that_are_not_resource_names_are_asked_by_their_derived_name() {
            // Uppercase and `_`, a name without a leading slash, and a one-level name with one,
            // which the ARN cannot tell from the name without: both are asked as `plain` is.
            for (name, read_as, verb, action) in [
                ("/App/DB_url", "/App/DB_url", "update", "ssm:PutParameter"),
                ("plain", "plain", "delete", "ssm:DeleteParameter"),
                ("/plain", "plain", "get", "ssm:GetParameters"),
                ("/app/a.b", "/app/a.b", "update", "ssm:AddTagsToResource"),
                ("/app-db", "app-db", "get", "ssm:GetParameter"),
            ] {
                let (allowed, request) = decide(
                    &caller(),
                    action,
                    &parameter_arn("team-a", name),
                    201,
                    serde_json::json!({"allowed": false}),
                )
                .await;
                assert!(!allowed, "{name}");
                let attributes = &request["spec"]["resourceAttributes"];
                assert_eq!(attributes["verb"], verb, "{name}");
                assert_eq!(attributes["resource"], "parameters", "{name}");
                let expected = crate::resources::parameter::parameter_resource_name(read_as);
                assert_eq!(
                    attributes["name"].as_str(),
                    Some(expected.as_str()),
                    "{name}"
                );
                assert!(expected.starts_with("p-"), "{name}: {expected}");
            }
        }

        #[tokio::test]
        async fn declared_parameters_are_asked_by_the_name_parameter_names_gives() {
            struct Declared(Mutex<Vec<(String, String)>>);
            impl ParameterNames for Declared {
                fn rbac_name(&self, namespace: &str, parameter_name: &str) -> String {
                    if let Ok(mut asked) = self.0.lock() {
                        asked.push((namespace.to_owned(), parameter_name.to_owned()));
                    }
                    "database-url".to_owned()
                }
            }
            let declared = Arc::new(Declared(Mutex::new(Vec::new())));
            let (client, mut server) = client();
            let authority = KubernetesAuthority::new(client)
                .with_parameter_names(Arc::clone(&declared) as Arc<dyn ParameterNames>);
            let server = tokio::spawn(async move {
                let mut asked = Vec::new();
                for _ in 0..2 {
                    let (request, send) = next_post(&mut server, SUBJECT_ACCESS_REVIEWS_PATH).await;
                    asked.push(request["spec"]["resourceAttributes"].clone());
                    respond(
                        send,
                        201,
                        sar_answer(&request, serde_json::json!({"allowed": true})),
                    );
                }
                (server, asked)
            });
            assert!(
                authority
                    .allows(
                        &caller(),
                        "ssm:LabelParameterVersion",
                        &parameter_arn("team-a", "/app/db/url")
                    )
                    .await
            );
            // Account-wide questions name no parameter, so the names are not consulted.
            assert!(
                authority
                    .allows(&caller(), "ssm:DescribeParameters", "*")
                    .await
            );
            let (mut server, asked) = server.await.unwrap();
            assert_eq!(asked[0]["verb"], "update");
            assert_eq!(asked[0]["resource"], "parameters");
            assert_eq!(asked[0]["name"], "database-url");
            assert_eq!(asked[1]["verb"], "list");
            assert!(asked[1].get("name").is_none(), "{}", asked[1]);
            assert_eq!(
                *declared.0.lock().unwrap(),
                [("team-a".to_owned(), "/app/db/url".to_owned())]
            );
            drop(authority);
            assert!(server.next_request().await.is_none());
        }

        #[tokio::test]
        async fn account_level_parameter_actions_name_no_parameter() {
            for (action, verb) in [
                ("ssm:GetParametersByPath", "list"),
                ("ssm:DescribeParameters", "list"),
                ("ssm:GetParameter", "get"),
                ("ssm:PutParameter", "update"),
            ] {
                let (allowed, request) = decide(
                    &caller(),
                    action,
                    "*",
                    201,
                    serde_json::json!({"allowed": true}),
                )
                .await;
                assert!(allowed, "{action}");
                let attributes = &request["spec"]["resourceAttributes"];
                assert_eq!(attributes["verb"], verb, "{action}");
                assert_eq!(attributes["resource"], "parameters", "{action}");
                assert!(attributes.get("name").is_none(), "{action}: {attributes}");
                assert_eq!(attributes["namespace"], "team-a", "{action}");
            }
            // The engine asks the listing actions of each parameter: `get` on that one.
            let (_, request) = decide(
                &caller(),
                "ssm:GetParametersByPath",
                &parameter_arn("team-a", "/app/db/url"),
                201,
                serde_json::json!({"allowed": true}),
            )
            .await;
            let attributes = &request["spec"]["resourceAttributes"];
            assert_eq!(attributes["verb"], "get");
            assert_eq!(attributes["name"], "app.db.url");
        }

        #[tokio::test]
        async fn parameters_of_other_namespaces_and_unknown_actions_are_denied_without_asking() {
            let (client, mut server) = client();
            let authority = KubernetesAuthority::new(client);
            for (action, _) in PARAMETER_ACTIONS {
                for name in ["/app/db/url", "plain"] {
                    assert!(
                        !authority
                            .allows(&caller(), action, &parameter_arn("team-b", name))
                            .await,
                        "{action} {name}"
                    );
                }
            }
            for action in [
                "ssm:*",
                "ssm:GetParameter*",
                "ssm:SendCommand",
                "ssm:StartSession",
                "ssm:DeleteParametersByPath",
                "ssm:GetDocument",
            ] {
                assert!(!authority.allows(&caller(), action, "*").await, "{action}");
                assert!(
                    !authority
                        .allows(&caller(), action, &parameter_arn("team-a", "/app/db/url"))
                        .await,
                    "{action}"
                );
            }
            // Nor is a resource that is not a parameter, a name the engine refuses, or a
            // parameter for another service's action.
            for resource in [
                KEY_ARN.to_owned(),
                secret_arn("team-a", "app-db"),
                format!(
                    "arn:aws:ssm:us-east-1:{}:document/app",
                    account_id("team-a")
                ),
                parameter_arn("team-a", "/app//db"),
                parameter_arn("team-a", "/aws/service/x"),
            ] {
                assert!(
                    !authority
                        .allows(&caller(), "ssm:GetParameter", &resource)
                        .await,
                    "{resource}"
                );
            }
            let parameter = parameter_arn("team-a", "/app/db/url");
            for action in ["kms:Decrypt", "secretsmanager:GetSecretValue"] {
                assert!(
                    !authority.allows(&caller(), action, &parameter).await,
                    "{action}"
                );
            }
            drop(authority);
            assert!(server.next_request().await.is_none(), "no review was sent");
        }

        #[tokio::test]
        async fn parameter_decisions_are_cached_apart_from_secret_decisions() {
            let (client, mut server) = client();
            let authority = KubernetesAuthority::new(client);
            let server = tokio::spawn(async move {
                let mut asked = Vec::new();
                for allowed in [true, false] {
                    let (request, send) = next_post(&mut server, SUBJECT_ACCESS_REVIEWS_PATH).await;
                    let attributes = &request["spec"]["resourceAttributes"];
                    asked.push(format!(
                        "{} {}/{}",
                        attributes["verb"].as_str().unwrap_or_default(),
                        attributes["resource"].as_str().unwrap_or_default(),
                        attributes["name"].as_str().unwrap_or_default()
                    ));
                    respond(
                        send,
                        201,
                        sar_answer(&request, serde_json::json!({"allowed": allowed})),
                    );
                }
                (server, asked)
            });
            // Secret `app.db` and parameter `/app/db` are both `app.db` to RBAC.
            let secret = secret_arn("team-a", "app.db");
            let parameter = parameter_arn("team-a", "/app/db");
            assert!(
                authority
                    .allows(&caller(), "secretsmanager:GetSecretValue", &secret)
                    .await
            );
            assert!(
                !authority
                    .allows(&caller(), "ssm:GetParameter", &parameter)
                    .await
            );
            // Same resource, verb and name: answered from the cache.
            assert!(
                !authority
                    .allows(&caller(), "ssm:GetParameterHistory", &parameter)
                    .await
            );
            let (mut server, asked) = server.await.unwrap();
            assert_eq!(asked, ["get secrets/app.db", "get parameters/app.db"]);
            drop(authority);
            assert!(
                server.next_request().await.is_none(),
                "exactly two reviews were sent"
            );
        }

        #[tokio::test]
        async fn a_cached_decision_makes_no_second_request() {
            let (client, mut server) = client();
            let authority = KubernetesAuthority::new(client);
            let server = tokio::spawn(async move {
                let (request, send) = next_post(&mut server, SUBJECT_ACCESS_REVIEWS_PATH).await;
                assert_eq!(request["spec"]["resourceAttributes"]["verb"], "decrypt");
                respond(
                    send,
                    201,
                    sar_answer(&request, serde_json::json!({"allowed": true})),
                );
                let (request, send) = next_post(&mut server, SUBJECT_ACCESS_REVIEWS_PATH).await;
                assert_eq!(request["spec"]["resourceAttributes"]["verb"], "encrypt");
                respond(
                    send,
                    201,
                    sar_answer(&request, serde_json::json!({"allowed": false})),
                );
                server
            });
            assert!(authority.allows(&caller(), "kms:Decrypt", KEY_ARN).await);
            assert!(authority.allows(&caller(), "kms:Decrypt", KEY_ARN).await);
            assert!(!authority.allows(&caller(), "kms:Encrypt", KEY_ARN).await);
            assert!(!authority.allows(&caller(), "kms:Encrypt", KEY_ARN).await);
            let mut server = server.await.unwrap();
            drop(authority);
            assert!(
                server.next_request().await.is_none(),
                "exactly two reviews were sent"
            );
        }
    }
}
