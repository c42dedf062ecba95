//! IAM policy documents, the grammar every service shares (KMS key policies, Secrets Manager
//! resource policies): parsed strictly and evaluated as AWS does. Each service brings its own
//! condition keys ([`ServiceKeys`]); the grammar, the global keys and evaluation are here.
//!
//! Parsing is strict because a policy Coffer only half understood would grant or deny something
//! its author did not mean: anything outside the supported grammar is refused when the policy is
//! put, never silently ignored when a request arrives.
//!
//! Evaluation follows IAM: an explicit Deny wins, then any matching Allow, else an implicit deny.
//! A statement naming an account (its root ARN or bare id) grants nothing by itself: an Allow
//! delegates to the account's own permission system, the `account_delegate` (access-key
//! permissions in standalone mode, Kubernetes RBAC in cluster mode). A Deny naming an account
//! needs no delegation and applies to every principal of that account.
//!
//! Condition key names are case-insensitive, as in AWS (a service may keep part of a key
//! case-sensitive, as KMS does for encryption context keys). Condition keys Coffer does not know
//! are accepted and treated as absent from every request, as AWS treats keys a request does not
//! carry.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

/// AWS's limit on a policy, checked before parsing so an oversized body costs nothing.
pub const MAX_POLICY_BYTES: usize = 32 * 1024;

/// Policy language versions AWS accepts; neither changes anything Coffer evaluates.
const VERSIONS: [&str; 2] = ["2012-10-17", "2008-10-17"];

/// How much of a user-supplied name an error message may quote.
const CLIP_CHARS: usize = 64;

/// Why a policy document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The document exceeds [`MAX_POLICY_BYTES`].
    #[error("policy document is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    /// The document is not well-formed JSON (or repeats a field name).
    #[error("policy document is not valid JSON: {0}")]
    NotJson(String),
    /// A problem outside any statement.
    #[error("policy document: {0}")]
    Document(String),
    /// A problem inside a statement; `at` names its index and Sid.
    #[error("{at}: {reason}")]
    Statement { at: String, reason: String },
    /// A statement uses a policy element Coffer deliberately does not implement.
    #[error("{at}: {element} is not supported; {hint}")]
    Unsupported {
        at: String,
        element: &'static str,
        hint: &'static str,
    },
}

/// The identity making a request, as the front end authenticated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub arn: String,
    pub account_id: String,
}

/// One request to decide: who, what, on which resource, with what the service's condition keys
/// read (`C`: for KMS, the encryption context).
#[derive(Debug)]
pub struct AccessRequest<'a, C: ?Sized> {
    pub principal: &'a Principal,
    /// The action, such as `kms:Decrypt`.
    pub action: &'a str,
    pub resource_arn: &'a str,
    pub context: &'a C,
    /// The resource's account; not read by the policy itself, but handed to the delegate so it
    /// can tell a same-account request from a cross-account one.
    pub key_account_id: &'a str,
    /// Whether the request arrived over TLS (`aws:SecureTransport`).
    pub secure_transport: bool,
}

impl<C: ?Sized> Clone for AccessRequest<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C: ?Sized> Copy for AccessRequest<'_, C> {}

/// A service's own condition keys (`kms:...`), beside the global ones (`aws:...`).
pub trait ServiceKeys: Sized + Clone + fmt::Debug + Send + Sync + 'static {
    /// What a request carries that these keys read.
    type Context: ?Sized;

    /// The service's key named `name`; `Ok(None)` when `name` is not one of its keys, `Err`
    /// when it is one but malformed.
    fn parse(name: &str) -> Result<Option<Self>, String>;

    /// The key's values in a request, or `None` when the request does not carry it.
    fn values_in<'r>(&self, request: &AccessRequest<'r, Self::Context>) -> Option<Vec<&'r str>>;
}

/// The outcome of evaluating a request against a key policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// A Deny statement matched; nothing else can allow the request.
    ExplicitDeny,
    /// No statement allowed the request.
    ImplicitDeny,
}

/// A parsed policy, keeping the exact text it was parsed from.
///
/// [`Policy::parse`] refuses condition keys Coffer does not know, so that a misspelt or
/// unsupported key is an error where the policy is written. A policy stored before a key was
/// known to be unsupported loads with [`Policy::parse_stored`], and fails closed there: a Deny
/// whose condition names such a key applies, an Allow does not.
#[derive(Debug, Clone)]
pub struct Policy<K: ServiceKeys> {
    /// Kept verbatim because a Get must return what a Put was given.
    document: String,
    statements: Vec<Statement<K>>,
}

impl<K: ServiceKeys> Policy<K> {
    /// Parses and validates a policy document, as a caller writes it: every condition key must
    /// be one Coffer evaluates.
    pub fn parse(json: &str) -> Result<Self, PolicyError> {
        let policy = Self::parse_stored(json)?;
        for (index, statement) in policy.statements.iter().enumerate() {
            if let Some(name) = statement.conditions.iter().find_map(|c| match &c.key {
                ConditionKey::Unknown(name) => Some(name),
                _ => None,
            }) {
                return Err(PolicyError::Statement {
                    at: format!("Statement[{index}]"),
                    reason: format!("condition key {} is not supported", clip(name)),
                });
            }
        }
        Ok(policy)
    }

    /// Parses a policy document that was accepted once and stored, keeping condition keys Coffer
    /// does not know, which then fail closed.
    pub fn parse_stored(json: &str) -> Result<Self, PolicyError> {
        if json.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                size: json.len(),
                limit: MAX_POLICY_BYTES,
            });
        }
        let root: Json =
            serde_json::from_str(json).map_err(|e| PolicyError::NotJson(e.to_string()))?;
        let Json::Object(fields) = &root else {
            return Err(PolicyError::Document(format!(
                "must be a JSON object, not {}",
                root.kind()
            )));
        };
        let mut statements = None;
        for (name, value) in fields {
            match name.as_str() {
                "Version" => match value {
                    Json::Str(v) if VERSIONS.contains(&v.as_str()) => {}
                    _ => {
                        return Err(PolicyError::Document(
                            "Version must be \"2012-10-17\" or \"2008-10-17\"".to_owned(),
                        ));
                    }
                },
                "Id" => {
                    if value.as_str().is_none() {
                        return Err(PolicyError::Document("Id must be a string".to_owned()));
                    }
                }
                "Statement" => statements = Some(parse_statements(value)?),
                other => {
                    return Err(PolicyError::Document(format!(
                        "unknown top-level field {}",
                        clip(other)
                    )));
                }
            }
        }
        let statements =
            statements.ok_or_else(|| PolicyError::Document("missing Statement".to_owned()))?;
        Ok(Policy {
            document: json.to_owned(),
            statements,
        })
    }

    /// Decides `request`. `account_delegate` is consulted only for Allow statements that name
    /// the caller's account, at most once, and only once such a statement otherwise matches,
    /// since asking it may be costly.
    pub fn evaluate(
        &self,
        request: &AccessRequest<'_, K::Context>,
        account_delegate: &dyn Fn(&AccessRequest<'_, K::Context>) -> bool,
    ) -> Decision {
        let action = request.action.to_ascii_lowercase();
        let delegation = Delegation {
            ask: account_delegate,
            request,
            answer: Cell::new(None),
        };
        let applies = |effect: Effect| {
            self.statements
                .iter()
                .filter(|s| s.effect == effect)
                .any(|s| s.applies(request, &action, &delegation))
        };
        if applies(Effect::Deny) {
            Decision::ExplicitDeny
        } else if applies(Effect::Allow) {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }

    /// Whether an Allow statement admits anyone at all (`"Principal": "*"`) with no condition:
    /// a public policy.
    pub fn allows_anyone(&self) -> bool {
        self.statements.iter().any(|statement| {
            statement.effect == Effect::Allow
                && statement.conditions.is_empty()
                && statement
                    .principals
                    .iter()
                    .any(|p| matches!(p, PrincipalPattern::Anyone))
        })
    }

    /// The document exactly as it was parsed.
    pub fn to_json(&self) -> String {
        self.document.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// The parsed form.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PrincipalPattern {
    Anyone,
    /// An account, named by its root ARN or its bare id.
    Account(String),
    /// Any other principal ARN, matched exactly (AWS allows no wildcards here).
    Arn(String),
}

#[derive(Debug, Clone)]
enum ActionSet {
    /// `Action`: lowercased patterns, since action names are case-insensitive.
    Only(Vec<String>),
    /// `NotAction`: every action except these.
    AllBut(Vec<String>),
}

#[derive(Debug, Clone)]
struct Statement<K> {
    effect: Effect,
    principals: Vec<PrincipalPattern>,
    actions: ActionSet,
    resources: Vec<String>,
    /// All must hold.
    conditions: Vec<Condition<K>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    Bool,
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    Single,
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone)]
enum ConditionKey<K> {
    /// A key of the policy's service.
    Service(K),
    PrincipalArn,
    PrincipalAccount,
    SecureTransport,
    /// A well-formed key Coffer does not know (only in a stored policy): fails closed.
    Unknown(String),
}

#[derive(Debug, Clone)]
struct Condition<K> {
    operator: Operator,
    qualifier: SetQualifier,
    if_exists: bool,
    key: ConditionKey<K>,
    /// Any one may match. For Bool and Null, lowercased "true" or "false".
    values: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

/// Remembers the delegate's answer so one evaluation asks it at most once.
struct Delegation<'a, 'r, C: ?Sized> {
    ask: &'a dyn Fn(&AccessRequest<'_, C>) -> bool,
    request: &'a AccessRequest<'r, C>,
    answer: Cell<Option<bool>>,
}

impl<C: ?Sized> Delegation<'_, '_, C> {
    fn granted(&self) -> bool {
        if let Some(answer) = self.answer.get() {
            return answer;
        }
        let answer = (self.ask)(self.request);
        self.answer.set(Some(answer));
        answer
    }
}

impl<K: ServiceKeys> Statement<K> {
    /// Cheap checks first, the principal (which may ask the delegate) last.
    fn applies(
        &self,
        request: &AccessRequest<'_, K::Context>,
        action: &str,
        delegation: &Delegation<'_, '_, K::Context>,
    ) -> bool {
        self.covers_action(action)
            && self
                .resources
                .iter()
                .any(|pattern| wildcard_match(pattern, request.resource_arn))
            && self
                .conditions
                .iter()
                .all(|c| c.holds(request, self.effect))
            && self.names_principal(request.principal, delegation)
    }

    fn covers_action(&self, action: &str) -> bool {
        match &self.actions {
            ActionSet::Only(patterns) => patterns.iter().any(|p| wildcard_match(p, action)),
            ActionSet::AllBut(patterns) => !patterns.iter().any(|p| wildcard_match(p, action)),
        }
    }

    fn names_principal(
        &self,
        principal: &Principal,
        delegation: &Delegation<'_, '_, K::Context>,
    ) -> bool {
        let direct = self.principals.iter().any(|pattern| match pattern {
            PrincipalPattern::Anyone => true,
            PrincipalPattern::Arn(arn) => *arn == principal.arn,
            PrincipalPattern::Account(account) => {
                root_account(&principal.arn) == Some(account.as_str())
            }
        });
        if direct {
            return true;
        }
        let names_account = self.principals.iter().any(
            |pattern| matches!(pattern, PrincipalPattern::Account(a) if *a == principal.account_id),
        );
        // A Deny needs nobody's consent; an Allow only passes the question on to the account.
        names_account && (self.effect == Effect::Deny || delegation.granted())
    }
}

impl<K: ServiceKeys> Condition<K> {
    /// IAM's rules: a missing key fails a positive operator and satisfies a negated one;
    /// `...IfExists` passes on a missing key; `Null` tests presence; over a set of values,
    /// `ForAllValues` holds for the empty set and `ForAnyValue` does not.
    /// A key Coffer does not know fails closed: it holds in a Deny and not in an Allow.
    fn holds(&self, request: &AccessRequest<'_, K::Context>, effect: Effect) -> bool {
        if matches!(self.key, ConditionKey::Unknown(_)) {
            return effect == Effect::Deny;
        }
        let Some(actual) = self.key.values_in(request) else {
            return match (self.operator, self.qualifier) {
                (Operator::Null, _) => self.values.iter().any(|v| v == "true"),
                _ if self.if_exists => true,
                (_, SetQualifier::ForAllValues) => true,
                (_, SetQualifier::ForAnyValue) => false,
                (operator, SetQualifier::Single) => operator.negated(),
            };
        };
        if self.operator == Operator::Null {
            return self.values.iter().any(|v| v == "false");
        }
        let fits = |value: &&str| self.value_fits(value);
        match self.qualifier {
            SetQualifier::ForAnyValue => actual.iter().any(fits),
            SetQualifier::ForAllValues => actual.iter().all(fits),
            // Without a set operator a negated test means "no value matches".
            SetQualifier::Single if self.operator.negated() => actual.iter().all(fits),
            SetQualifier::Single => actual.iter().any(fits),
        }
    }

    /// Whether one request value satisfies the operator against the policy's values.
    fn value_fits(&self, actual: &str) -> bool {
        let hit = self
            .values
            .iter()
            .any(|expected| self.operator.matches(expected, actual));
        hit != self.operator.negated()
    }
}

impl Operator {
    fn from_name(name: &str) -> Option<Operator> {
        Some(match name {
            "StringEquals" => Operator::StringEquals,
            "StringNotEquals" => Operator::StringNotEquals,
            "StringEqualsIgnoreCase" => Operator::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => Operator::StringNotEqualsIgnoreCase,
            "StringLike" => Operator::StringLike,
            "StringNotLike" => Operator::StringNotLike,
            "Bool" => Operator::Bool,
            "Null" => Operator::Null,
            _ => return None,
        })
    }

    fn negated(self) -> bool {
        matches!(
            self,
            Operator::StringNotEquals
                | Operator::StringNotEqualsIgnoreCase
                | Operator::StringNotLike
        )
    }

    /// The positive sense of the operator; `negated` flips it.
    fn matches(self, expected: &str, actual: &str) -> bool {
        match self {
            Operator::StringEquals | Operator::StringNotEquals => expected == actual,
            Operator::StringEqualsIgnoreCase | Operator::StringNotEqualsIgnoreCase => {
                expected.to_lowercase() == actual.to_lowercase()
            }
            Operator::StringLike | Operator::StringNotLike => wildcard_match(expected, actual),
            Operator::Bool => expected.eq_ignore_ascii_case(actual),
            // Null looks only at presence, handled before values are compared.
            Operator::Null => false,
        }
    }
}

impl<K: ServiceKeys> ConditionKey<K> {
    /// Names are ASCII, so ASCII case folding suffices and keeps byte offsets stable.
    fn parse(name: &str) -> Result<ConditionKey<K>, String> {
        let well_formed = name
            .split_once(':')
            .is_some_and(|(service, rest)| !service.is_empty() && !rest.is_empty());
        if !well_formed {
            return Err(format!(
                "condition key {} must look like service:name",
                clip(name)
            ));
        }
        if let Some(key) = K::parse(name)? {
            return Ok(ConditionKey::Service(key));
        }
        let global = [
            ("aws:PrincipalArn", ConditionKey::PrincipalArn),
            ("aws:PrincipalAccount", ConditionKey::PrincipalAccount),
            ("aws:SecureTransport", ConditionKey::SecureTransport),
        ];
        Ok(global
            .into_iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map_or_else(|| ConditionKey::Unknown(name.to_owned()), |(_, key)| key))
    }

    /// The key's values in this request, or `None` when the request does not carry it.
    fn values_in<'r>(&self, request: &AccessRequest<'r, K::Context>) -> Option<Vec<&'r str>> {
        match self {
            ConditionKey::Service(key) => key.values_in(request),
            ConditionKey::PrincipalArn => Some(vec![request.principal.arn.as_str()]),
            ConditionKey::PrincipalAccount => Some(vec![request.principal.account_id.as_str()]),
            ConditionKey::SecureTransport => Some(vec![if request.secure_transport {
                "true"
            } else {
                "false"
            }]),
            ConditionKey::Unknown(_) => None,
        }
    }
}

/// The account of `arn:<partition>:iam::<account>:root`, if `arn` is an account root.
pub fn root_account(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    let shape = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    );
    match shape {
        (
            Some("arn"),
            Some(partition),
            Some("iam"),
            Some(""),
            Some(account),
            Some("root"),
            None,
        ) if !partition.is_empty() && !account.is_empty() => Some(account),
        _ => None,
    }
}

/// IAM wildcard matching: `*` is any run of characters (possibly none), `?` exactly one, and
/// everything else is literal and case-sensitive; callers fold case first where IAM does.
///
/// Greedy with backtracking to the last `*` only, which is enough because a later `*` can
/// absorb anything an earlier one could: linear memory, O(pattern × text) time at worst.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: the pattern index past it and the text index it
    // has absorbed up to.
    let mut resume: Option<(usize, usize)> = None;
    while let Some(&c) = text.get(t) {
        match pattern.get(p) {
            Some('*') => {
                resume = Some((p + 1, t));
                p += 1;
            }
            Some(&want) if want == '?' || want == c => {
                p += 1;
                t += 1;
            }
            _ => match resume {
                Some((after_star, absorbed)) => {
                    resume = Some((after_star, absorbed + 1));
                    p = after_star;
                    t = absorbed + 1;
                }
                None => return false,
            },
        }
    }
    pattern.iter().skip(p).all(|&c| c == '*')
}

// ---------------------------------------------------------------------------------------------
// Parsing.

/// A statement-level problem, before it is labelled with the statement's position.
enum Problem {
    Invalid(String),
    Unsupported {
        element: &'static str,
        hint: &'static str,
    },
}

impl From<String> for Problem {
    fn from(reason: String) -> Problem {
        Problem::Invalid(reason)
    }
}

impl From<&str> for Problem {
    fn from(reason: &str) -> Problem {
        Problem::Invalid(reason.to_owned())
    }
}

fn parse_statements<K: ServiceKeys>(value: &Json) -> Result<Vec<Statement<K>>, PolicyError> {
    match value {
        Json::Array(items) if items.is_empty() => Err(PolicyError::Document(
            "Statement must hold at least one statement".to_owned(),
        )),
        Json::Array(items) => items
            .iter()
            .enumerate()
            .map(|(index, item)| parse_statement(index, item))
            .collect(),
        // AWS accepts a lone statement object in place of a list.
        Json::Object(_) => Ok(vec![parse_statement(0, value)?]),
        other => Err(PolicyError::Document(format!(
            "Statement must be an object or a list of objects, not {}",
            other.kind()
        ))),
    }
}

fn parse_statement<K: ServiceKeys>(
    index: usize,
    value: &Json,
) -> Result<Statement<K>, PolicyError> {
    let sid = match value {
        Json::Object(fields) => fields
            .iter()
            .find(|(name, _)| name == "Sid")
            .and_then(|(_, sid)| sid.as_str()),
        _ => None,
    };
    let at = match sid {
        Some(sid) => format!("Statement[{index}] (Sid {})", clip(sid)),
        None => format!("Statement[{index}]"),
    };
    build_statement(value).map_err(|problem| match problem {
        Problem::Invalid(reason) => PolicyError::Statement { at, reason },
        Problem::Unsupported { element, hint } => PolicyError::Unsupported { at, element, hint },
    })
}

fn build_statement<K: ServiceKeys>(value: &Json) -> Result<Statement<K>, Problem> {
    let Json::Object(fields) = value else {
        return Err(format!("a statement must be an object, not {}", value.kind()).into());
    };
    let mut effect = None;
    let mut principals = None;
    let mut actions = None;
    let mut resources = None;
    let mut conditions = Vec::new();
    for (name, value) in fields {
        match name.as_str() {
            "Sid" => {
                if value.as_str().is_none() {
                    return Err("Sid must be a string".into());
                }
            }
            "Effect" => {
                effect = Some(match value {
                    Json::Str(s) if s == "Allow" => Effect::Allow,
                    Json::Str(s) if s == "Deny" => Effect::Deny,
                    Json::Str(s) => {
                        return Err(format!(
                            "Effect must be \"Allow\" or \"Deny\", not {}",
                            clip(s)
                        )
                        .into());
                    }
                    other => {
                        return Err(format!(
                            "Effect must be \"Allow\" or \"Deny\", not {}",
                            other.kind()
                        )
                        .into());
                    }
                })
            }
            "Principal" => principals = Some(parse_principal(value)?),
            "NotPrincipal" => {
                return Err(Problem::Unsupported {
                    element: "NotPrincipal",
                    hint: "name principals in Principal, or Deny with a condition on aws:PrincipalArn",
                });
            }
            "Action" | "NotAction" => {
                if actions.is_some() {
                    return Err("a statement takes Action or NotAction, not both".into());
                }
                let patterns = parse_actions(name, value)?;
                actions = Some(if name == "Action" {
                    ActionSet::Only(patterns)
                } else {
                    ActionSet::AllBut(patterns)
                });
            }
            "Resource" => resources = Some(parse_resources(value)?),
            "NotResource" => {
                return Err(Problem::Unsupported {
                    element: "NotResource",
                    hint: "a key policy applies to its own key; use \"Resource\": \"*\"",
                });
            }
            "Condition" => conditions = parse_conditions(value)?,
            other => return Err(format!("unknown field {}", clip(other)).into()),
        }
    }
    Ok(Statement {
        effect: effect.ok_or("missing Effect")?,
        principals: principals.ok_or("missing Principal")?,
        actions: actions.ok_or("missing Action (or NotAction)")?,
        resources: resources.ok_or("missing Resource")?,
        conditions,
    })
}

fn parse_principal(value: &Json) -> Result<Vec<PrincipalPattern>, String> {
    let fields = match value {
        Json::Str(s) if s == "*" => return Ok(vec![PrincipalPattern::Anyone]),
        Json::Object(fields) if !fields.is_empty() => fields,
        _ => return Err("Principal must be \"*\" or an object such as {\"AWS\": ...}".to_owned()),
    };
    let mut patterns = Vec::new();
    for (kind, names) in fields {
        if kind != "AWS" {
            return Err(format!(
                "unsupported principal type {}; only \"AWS\" principals are supported",
                clip(kind)
            ));
        }
        for name in string_list("Principal AWS", names)? {
            patterns.push(parse_principal_name(&name)?);
        }
    }
    Ok(patterns)
}

fn parse_principal_name(name: &str) -> Result<PrincipalPattern, String> {
    if name == "*" {
        return Ok(PrincipalPattern::Anyone);
    }
    if name.len() == 12 && name.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(PrincipalPattern::Account(name.to_owned()));
    }
    if let Some(account) = root_account(name) {
        return Ok(PrincipalPattern::Account(account.to_owned()));
    }
    if name.starts_with("arn:") && !name.contains(['*', '?']) {
        return Ok(PrincipalPattern::Arn(name.to_owned()));
    }
    Err(format!(
        "invalid principal {}: expected \"*\", a 12-digit account id or an ARN without wildcards",
        clip(name)
    ))
}

fn parse_actions(element: &str, value: &Json) -> Result<Vec<String>, String> {
    let actions = string_list(element, value)?;
    for action in &actions {
        let well_formed = action == "*"
            || action
                .split_once(':')
                .is_some_and(|(service, name)| !service.is_empty() && !name.is_empty());
        if !well_formed {
            return Err(format!(
                "invalid action {} in {element}: expected service:name, such as kms:Decrypt",
                clip(action)
            ));
        }
    }
    Ok(actions.iter().map(|a| a.to_ascii_lowercase()).collect())
}

fn parse_resources(value: &Json) -> Result<Vec<String>, String> {
    let resources = string_list("Resource", value)?;
    if let Some(bad) = resources
        .iter()
        .find(|r| *r != "*" && !r.starts_with("arn:"))
    {
        return Err(format!(
            "invalid resource {}: expected \"*\" or an ARN",
            clip(bad)
        ));
    }
    Ok(resources)
}

fn parse_conditions<K: ServiceKeys>(value: &Json) -> Result<Vec<Condition<K>>, String> {
    let Json::Object(blocks) = value else {
        return Err(format!("Condition must be an object, not {}", value.kind()));
    };
    let mut conditions = Vec::new();
    for (operator_name, block) in blocks {
        let (qualifier, operator, if_exists) = parse_operator(operator_name)?;
        let entries = match block {
            Json::Object(entries) if !entries.is_empty() => entries,
            _ => {
                return Err(format!(
                    "condition operator {} must map to a non-empty object of condition keys",
                    clip(operator_name)
                ));
            }
        };
        for (key_name, values) in entries {
            let key = ConditionKey::parse(key_name)?;
            let mut values = condition_values(key_name, values)?;
            if matches!(operator, Operator::Bool | Operator::Null) {
                for value in &mut values {
                    if !(value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false"))
                    {
                        return Err(format!(
                            "{} values must be true or false; {} has {}",
                            clip(operator_name),
                            clip(key_name),
                            clip(value)
                        ));
                    }
                    *value = value.to_ascii_lowercase();
                }
            }
            conditions.push(Condition {
                operator,
                qualifier,
                if_exists,
                key,
                values,
            });
        }
    }
    Ok(conditions)
}

/// Splits `[ForAnyValue:|ForAllValues:]Operator[IfExists]`.
fn parse_operator(name: &str) -> Result<(SetQualifier, Operator, bool), String> {
    let (qualifier, rest) = if let Some(rest) = name.strip_prefix("ForAnyValue:") {
        (SetQualifier::ForAnyValue, rest)
    } else if let Some(rest) = name.strip_prefix("ForAllValues:") {
        (SetQualifier::ForAllValues, rest)
    } else {
        (SetQualifier::Single, name)
    };
    let (base, if_exists) = match rest.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (rest, false),
    };
    let operator = Operator::from_name(base)
        .ok_or_else(|| format!("unknown condition operator {}", clip(name)))?;
    if operator == Operator::Null && (if_exists || qualifier != SetQualifier::Single) {
        return Err(format!(
            "condition operator {} is invalid: Null takes neither a set prefix nor IfExists",
            clip(name)
        ));
    }
    Ok((qualifier, operator, if_exists))
}

/// Condition values may be strings, booleans or numbers, alone or in a list; IAM compares
/// them all as strings.
fn condition_values(key_name: &str, value: &Json) -> Result<Vec<String>, String> {
    let scalar = |item: &Json| match item {
        Json::Str(s) | Json::Number(s) => Some(s.clone()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let values = match value {
        Json::Array(items) if !items.is_empty() => items.iter().map(scalar).collect(),
        Json::Array(_) => None,
        item => scalar(item).map(|s| vec![s]),
    };
    values.ok_or_else(|| {
        format!(
            "condition key {} must have a string, boolean or number, or a non-empty list of them",
            clip(key_name)
        )
    })
}

/// A string, or a non-empty list of strings.
fn string_list(element: &str, value: &Json) -> Result<Vec<String>, String> {
    let strings = match value {
        Json::Str(s) => Some(vec![s.clone()]),
        Json::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    };
    strings.ok_or_else(|| format!("{element} must be a string or a non-empty list of strings"))
}

/// Quotes user input for an error message, cut short so a huge document is never echoed.
pub fn clip(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(CLIP_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}...")
    } else {
        format!("{head:?}")
    }
}

// ---------------------------------------------------------------------------------------------
// JSON that refuses repeated field names.

/// A JSON tree that keeps field order and rejects duplicate names, which `serde_json::Value`
/// would silently collapse to the last one: a policy that reads one way to its author and
/// another to Coffer is refused instead.
#[derive(Debug)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::Str(_) => "a string",
            Json::Array(_) => "a list",
            Json::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Number(v.to_string()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut seen = HashSet::new();
        let mut fields = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            if !seen.insert(name.clone()) {
                return Err(de::Error::custom(format_args!(
                    "duplicate field {}",
                    clip(&name)
                )));
            }
            fields.push((name, map.next_value()?));
        }
        Ok(Json::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another service's condition keys: the grammar serves them unchanged.
    #[derive(Debug, Clone)]
    enum StageKey {
        Stage,
    }

    impl ServiceKeys for StageKey {
        type Context = str;

        fn parse(name: &str) -> Result<Option<Self>, String> {
            Ok("test:VersionStage"
                .eq_ignore_ascii_case(name)
                .then_some(StageKey::Stage))
        }

        fn values_in<'r>(&self, request: &AccessRequest<'r, str>) -> Option<Vec<&'r str>> {
            Some(vec![request.context])
        }
    }

    #[test]
    fn a_service_brings_its_own_condition_keys() {
        let policy = Policy::<StageKey>::parse(
            r#"{"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:user/a"},
                "Action": "test:Get*", "Resource": "*",
                "Condition": {
                    "StringEquals": {"test:VersionStage": "AWSCURRENT"},
                    "Bool": {"aws:SecureTransport": "true"}
                }
            }]}"#,
        )
        .unwrap();
        let principal = Principal {
            arn: "arn:aws:iam::111122223333:user/a".into(),
            account_id: "111122223333".into(),
        };
        let decide = |stage: &str, secure_transport: bool| {
            policy.evaluate(
                &AccessRequest {
                    principal: &principal,
                    action: "test:GetValue",
                    resource_arn: "arn:aws:test:r:111122223333:thing/x",
                    context: stage,
                    key_account_id: "111122223333",
                    secure_transport,
                },
                &|_| false,
            )
        };
        assert_eq!(decide("AWSCURRENT", true), Decision::Allow);
        assert_eq!(decide("AWSPREVIOUS", true), Decision::ImplicitDeny);
        assert_eq!(decide("AWSCURRENT", false), Decision::ImplicitDeny);
        // Another service's keys are unknown to this one, and refused.
        let foreign = Policy::<StageKey>::parse(
            r#"{"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": "*", "Action": "test:Get*", "Resource": "*",
                "Condition": {"Null": {"kms:CallerAccount": "true"}}
            }]}"#,
        );
        assert!(foreign.is_err());
    }
}
