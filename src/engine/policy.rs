//! Key policies: AWS-style policy documents, parsed strictly and evaluated as AWS KMS does.
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
//! Condition key names are case-insensitive, as in AWS, but the encryption context key after
//! `kms:EncryptionContext:` is compared case-sensitively, because the context itself is (it is
//! bound into the ciphertext byte for byte). Condition keys Coffer does not know are accepted and
//! treated as absent from every request, as AWS treats keys a request does not carry.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

/// AWS's limit on a key policy, checked before parsing so an oversized body costs nothing.
pub const MAX_POLICY_BYTES: usize = 32 * 1024;

/// Policy language versions AWS accepts; neither changes anything Coffer evaluates.
const VERSIONS: [&str; 2] = ["2012-10-17", "2008-10-17"];

/// The action the lockout check asks about.
const PUT_KEY_POLICY: &str = "kms:PutKeyPolicy";

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

/// One request to decide: who, what, on which key, with which encryption context.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    pub principal: &'a Principal,
    /// The KMS action, such as `kms:Decrypt`.
    pub action: &'a str,
    pub resource_arn: &'a str,
    pub encryption_context: &'a BTreeMap<String, String>,
    /// The key's account; not read by the policy itself, but handed to the delegate so it can
    /// tell a same-account request from a cross-account one.
    pub key_account_id: &'a str,
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

/// A parsed key policy, keeping the exact text it was parsed from.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    /// Kept verbatim because GetKeyPolicy must return what PutKeyPolicy was given.
    document: String,
    statements: Vec<Statement>,
}

impl KeyPolicy {
    /// Parses and validates a key policy document.
    pub fn parse(json: &str) -> Result<KeyPolicy, PolicyError> {
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
        Ok(KeyPolicy {
            document: json.to_owned(),
            statements,
        })
    }

    /// AWS's default key policy: the account may use the key as far as its own permissions
    /// (IAM in AWS, the delegate here) allow.
    pub fn default_document(account_id: &str) -> String {
        // Written out rather than built with `json!`, so the fields keep AWS's order.
        let principal = serde_json::Value::String(format!("arn:aws:iam::{account_id}:root"));
        format!(
            r#"{{
  "Version": "2012-10-17",
  "Id": "key-default-1",
  "Statement": [
    {{
      "Sid": "Enable IAM User Permissions",
      "Effect": "Allow",
      "Principal": {{
        "AWS": {principal}
      }},
      "Action": "kms:*",
      "Resource": "*"
    }}
  ]
}}"#
        )
    }

    /// Decides `request`. `account_delegate` is consulted only for Allow statements that name
    /// the caller's account, at most once, and only once such a statement otherwise matches,
    /// since asking it may be costly.
    pub fn evaluate(
        &self,
        request: &AccessRequest<'_>,
        account_delegate: &dyn Fn(&AccessRequest<'_>) -> bool,
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

    /// True when, under this policy, `caller` could no longer call `kms:PutKeyPolicy` on the
    /// key: AWS's lockout safety check, which refuses such a policy unless the caller bypasses
    /// it, because a key nobody can administer cannot be repaired.
    pub fn would_lock_out(
        &self,
        caller: &Principal,
        key_arn: &str,
        key_account_id: &str,
        account_delegate: &dyn Fn(&AccessRequest<'_>) -> bool,
    ) -> bool {
        let no_context = BTreeMap::new();
        let request = AccessRequest {
            principal: caller,
            action: PUT_KEY_POLICY,
            resource_arn: key_arn,
            encryption_context: &no_context,
            key_account_id,
        };
        self.evaluate(&request, account_delegate) != Decision::Allow
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
struct Statement {
    effect: Effect,
    principals: Vec<PrincipalPattern>,
    actions: ActionSet,
    resources: Vec<String>,
    /// All must hold.
    conditions: Vec<Condition>,
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum ConditionKey {
    /// `kms:EncryptionContext:<key>`, holding the case-sensitive context key.
    EncryptionContext(String),
    EncryptionContextKeys,
    CallerAccount,
    PrincipalArn,
    /// Coffer has no integrated services, so this key is never present.
    ViaService,
    /// A well-formed key Coffer does not know: never present.
    Unknown,
}

#[derive(Debug, Clone)]
struct Condition {
    operator: Operator,
    qualifier: SetQualifier,
    if_exists: bool,
    key: ConditionKey,
    /// Any one may match. For Bool and Null, lowercased "true" or "false".
    values: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

/// Remembers the delegate's answer so one evaluation asks it at most once.
struct Delegation<'a, 'r> {
    ask: &'a dyn Fn(&AccessRequest<'_>) -> bool,
    request: &'a AccessRequest<'r>,
    answer: Cell<Option<bool>>,
}

impl Delegation<'_, '_> {
    fn granted(&self) -> bool {
        if let Some(answer) = self.answer.get() {
            return answer;
        }
        let answer = (self.ask)(self.request);
        self.answer.set(Some(answer));
        answer
    }
}

impl Statement {
    /// Cheap checks first, the principal (which may ask the delegate) last.
    fn applies(&self, request: &AccessRequest<'_>, action: &str, delegation: &Delegation) -> bool {
        self.covers_action(action)
            && self
                .resources
                .iter()
                .any(|pattern| wildcard_match(pattern, request.resource_arn))
            && self.conditions.iter().all(|c| c.holds(request))
            && self.names_principal(request.principal, delegation)
    }

    fn covers_action(&self, action: &str) -> bool {
        match &self.actions {
            ActionSet::Only(patterns) => patterns.iter().any(|p| wildcard_match(p, action)),
            ActionSet::AllBut(patterns) => !patterns.iter().any(|p| wildcard_match(p, action)),
        }
    }

    fn names_principal(&self, principal: &Principal, delegation: &Delegation) -> bool {
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

impl Condition {
    /// IAM's rules: a missing key fails a positive operator and satisfies a negated one;
    /// `...IfExists` passes on a missing key; `Null` tests presence; over a set of values,
    /// `ForAllValues` holds for the empty set and `ForAnyValue` does not.
    fn holds(&self, request: &AccessRequest<'_>) -> bool {
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

impl ConditionKey {
    /// Names are ASCII, so ASCII case folding suffices and keeps byte offsets stable.
    fn parse(name: &str) -> Result<ConditionKey, String> {
        const CONTEXT_PREFIX: &str = "kms:EncryptionContext:";
        let well_formed = name
            .split_once(':')
            .is_some_and(|(service, rest)| !service.is_empty() && !rest.is_empty());
        if !well_formed {
            return Err(format!(
                "condition key {} must look like service:name",
                clip(name)
            ));
        }
        if let Some((prefix, context_key)) = name.split_at_checked(CONTEXT_PREFIX.len())
            && prefix.eq_ignore_ascii_case(CONTEXT_PREFIX)
        {
            if context_key.is_empty() {
                return Err(format!(
                    "condition key {} names no encryption context key",
                    clip(name)
                ));
            }
            return Ok(ConditionKey::EncryptionContext(context_key.to_owned()));
        }
        let known = [
            (
                "kms:EncryptionContextKeys",
                ConditionKey::EncryptionContextKeys,
            ),
            ("kms:CallerAccount", ConditionKey::CallerAccount),
            ("aws:PrincipalArn", ConditionKey::PrincipalArn),
            ("kms:ViaService", ConditionKey::ViaService),
        ];
        Ok(known
            .into_iter()
            .find(|(known_name, _)| known_name.eq_ignore_ascii_case(name))
            .map_or(ConditionKey::Unknown, |(_, key)| key))
    }

    /// The key's values in this request, or `None` when the request does not carry it.
    fn values_in<'r>(&self, request: &AccessRequest<'r>) -> Option<Vec<&'r str>> {
        match self {
            ConditionKey::EncryptionContext(key) => request
                .encryption_context
                .get(key)
                .map(|value| vec![value.as_str()]),
            // An empty context counts as absent, so `Null: false` can require a context.
            ConditionKey::EncryptionContextKeys if request.encryption_context.is_empty() => None,
            ConditionKey::EncryptionContextKeys => Some(
                request
                    .encryption_context
                    .keys()
                    .map(String::as_str)
                    .collect(),
            ),
            ConditionKey::CallerAccount => Some(vec![request.principal.account_id.as_str()]),
            ConditionKey::PrincipalArn => Some(vec![request.principal.arn.as_str()]),
            ConditionKey::ViaService | ConditionKey::Unknown => None,
        }
    }
}

/// The account of `arn:<partition>:iam::<account>:root`, if `arn` is an account root.
fn root_account(arn: &str) -> Option<&str> {
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
fn wildcard_match(pattern: &str, text: &str) -> bool {
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

fn parse_statements(value: &Json) -> Result<Vec<Statement>, PolicyError> {
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

fn parse_statement(index: usize, value: &Json) -> Result<Statement, PolicyError> {
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

fn build_statement(value: &Json) -> Result<Statement, Problem> {
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

fn parse_conditions(value: &Json) -> Result<Vec<Condition>, String> {
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
fn clip(s: &str) -> String {
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
    use proptest::prelude::*;
    use serde_json::json;

    const ACCOUNT: &str = "111122223333";
    const OTHER_ACCOUNT: &str = "444455556666";
    const KEY_ARN: &str =
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn user(account: &str, name: &str) -> Principal {
        Principal {
            arn: format!("arn:aws:iam::{account}:user/{name}"),
            account_id: account.to_owned(),
        }
    }

    fn alice() -> Principal {
        user(ACCOUNT, "alice")
    }

    fn context(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn policy(document: serde_json::Value) -> KeyPolicy {
        match KeyPolicy::parse(&document.to_string()) {
            Ok(policy) => policy,
            Err(e) => panic!("policy should parse: {e}"),
        }
    }

    /// A one-statement policy with the given effect, principal, action and condition.
    fn single(
        effect: &str,
        principal: serde_json::Value,
        action: serde_json::Value,
        condition: serde_json::Value,
    ) -> KeyPolicy {
        policy(json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "Only",
                "Effect": effect,
                "Principal": principal,
                "Action": action,
                "Resource": "*",
                "Condition": condition,
            }]
        }))
    }

    fn decide_on(
        policy: &KeyPolicy,
        who: &Principal,
        action: &str,
        resource: &str,
        ctx: &[(&str, &str)],
        delegate: bool,
    ) -> Decision {
        let ctx = context(ctx);
        let request = AccessRequest {
            principal: who,
            action,
            resource_arn: resource,
            encryption_context: &ctx,
            key_account_id: ACCOUNT,
        };
        policy.evaluate(&request, &|_| delegate)
    }

    fn decide(
        policy: &KeyPolicy,
        who: &Principal,
        action: &str,
        ctx: &[(&str, &str)],
        delegate: bool,
    ) -> Decision {
        decide_on(policy, who, action, KEY_ARN, ctx, delegate)
    }

    fn parse_err(document: &str) -> PolicyError {
        match KeyPolicy::parse(document) {
            Ok(_) => panic!("document should be refused"),
            Err(e) => e,
        }
    }

    fn statement_err(statement: serde_json::Value) -> PolicyError {
        parse_err(&json!({"Version": "2012-10-17", "Statement": [statement]}).to_string())
    }

    fn allow_decrypt_with(condition: serde_json::Value) -> KeyPolicy {
        single("Allow", json!("*"), json!("kms:Decrypt"), condition)
    }

    // --- default policy and delegation ---------------------------------------------------

    #[test]
    fn default_policy_allows_account_principals_only_when_the_delegate_agrees() {
        let policy = policy_from(&KeyPolicy::default_document(ACCOUNT));
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], true),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );
        let outsider = user(OTHER_ACCOUNT, "mallory");
        assert_eq!(
            decide(&policy, &outsider, "kms:Decrypt", &[], true),
            Decision::ImplicitDeny
        );
    }

    fn policy_from(text: &str) -> KeyPolicy {
        match KeyPolicy::parse(text) {
            Ok(policy) => policy,
            Err(e) => panic!("policy should parse: {e}"),
        }
    }

    #[test]
    fn account_root_itself_is_allowed_without_delegation() {
        let policy = policy_from(&KeyPolicy::default_document(ACCOUNT));
        let root = Principal {
            arn: format!("arn:aws:iam::{ACCOUNT}:root"),
            account_id: ACCOUNT.to_owned(),
        };
        assert_eq!(
            decide(&policy, &root, "kms:Decrypt", &[], false),
            Decision::Allow
        );
    }

    #[test]
    fn bare_account_id_principal_delegates_like_the_root_arn() {
        let policy = single("Allow", json!({"AWS": ACCOUNT}), json!("kms:*"), json!({}));
        assert_eq!(
            decide(&policy, &alice(), "kms:Encrypt", &[], true),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Encrypt", &[], false),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn delegate_sees_the_request_and_is_asked_at_most_once_and_only_when_needed() {
        let policy = policy(json!({"Statement": [
            {"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "kms:Decrypt", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
             "Action": "kms:Decrypt", "Resource": "*"},
        ]}));
        let calls = Cell::new(0);
        let seen = std::cell::RefCell::new(String::new());
        let delegate = |request: &AccessRequest<'_>| {
            calls.set(calls.get() + 1);
            *seen.borrow_mut() = format!("{} {}", request.action, request.resource_arn);
            false
        };
        let who = alice();
        let ctx = BTreeMap::new();
        let mut request = AccessRequest {
            principal: &who,
            action: "kms:Decrypt",
            resource_arn: KEY_ARN,
            encryption_context: &ctx,
            key_account_id: ACCOUNT,
        };
        assert_eq!(policy.evaluate(&request, &delegate), Decision::ImplicitDeny);
        assert_eq!(calls.get(), 1);
        assert_eq!(*seen.borrow(), format!("kms:Decrypt {KEY_ARN}"));

        request.action = "kms:Encrypt";
        assert_eq!(policy.evaluate(&request, &delegate), Decision::ImplicitDeny);
        assert_eq!(
            calls.get(),
            1,
            "no statement covers Encrypt, so nothing to delegate"
        );
    }

    #[test]
    fn default_document_is_pretty_json_in_aws_shape_and_round_trips() {
        let text = KeyPolicy::default_document(ACCOUNT);
        assert!(text.contains('\n'), "pretty-printed");
        let value: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => panic!("default document is JSON: {e}"),
        };
        assert_eq!(value["Version"], "2012-10-17");
        let statement = &value["Statement"][0];
        assert_eq!(statement["Sid"], "Enable IAM User Permissions");
        assert_eq!(statement["Effect"], "Allow");
        assert_eq!(
            statement["Principal"]["AWS"],
            "arn:aws:iam::111122223333:root"
        );
        assert_eq!(statement["Action"], "kms:*");
        assert_eq!(statement["Resource"], "*");
        assert_eq!(policy_from(&text).to_json(), text);
    }

    #[test]
    fn to_json_returns_the_document_verbatim() {
        let text = "{ \"Statement\" : {\"Effect\":\"Allow\",\n\"Principal\":\"*\",\"Action\":\"kms:Decrypt\",\"Resource\":\"*\"}  }";
        assert_eq!(policy_from(text).to_json(), text);
    }

    // --- deny and allow ----------------------------------------------------------------------

    #[test]
    fn explicit_deny_beats_allow_in_either_order() {
        let allow =
            json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"});
        let deny = json!({"Effect": "Deny", "Principal": {"AWS": alice().arn},
                          "Action": "kms:Decrypt", "Resource": "*"});
        for statements in [json!([allow, deny]), json!([deny, allow])] {
            let policy = policy(json!({"Statement": statements}));
            assert_eq!(
                decide(&policy, &alice(), "kms:Decrypt", &[], true),
                Decision::ExplicitDeny
            );
            assert_eq!(
                decide(&policy, &alice(), "kms:Encrypt", &[], true),
                Decision::Allow
            );
            let bob = user(ACCOUNT, "bob");
            assert_eq!(
                decide(&policy, &bob, "kms:Decrypt", &[], true),
                Decision::Allow
            );
        }
    }

    #[test]
    fn deny_naming_an_account_applies_to_its_principals_without_delegation() {
        let policy = policy(json!({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": {"AWS": OTHER_ACCOUNT}, "Action": "kms:*", "Resource": "*"},
        ]}));
        let outsider = user(OTHER_ACCOUNT, "mallory");
        assert_eq!(
            decide(&policy, &outsider, "kms:Decrypt", &[], false),
            Decision::ExplicitDeny
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
    }

    #[test]
    fn nothing_matching_is_an_implicit_deny() {
        let policy = single(
            "Allow",
            json!({"AWS": alice().arn}),
            json!("kms:Encrypt"),
            json!({}),
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], true),
            Decision::ImplicitDeny
        );
    }

    // --- actions -----------------------------------------------------------------------------

    #[test]
    fn action_wildcards_and_case() {
        let all = single("Allow", json!("*"), json!("kms:*"), json!({}));
        assert_eq!(
            decide(&all, &alice(), "kms:ScheduleKeyDeletion", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&all, &alice(), "secretsmanager:GetSecretValue", &[], false),
            Decision::ImplicitDeny
        );

        let generate = single("Allow", json!("*"), json!("kms:Gen*"), json!({}));
        for action in [
            "kms:GenerateDataKey",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:GenerateRandom",
        ] {
            assert_eq!(
                decide(&generate, &alice(), action, &[], false),
                Decision::Allow,
                "{action}"
            );
        }
        assert_eq!(
            decide(&generate, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );

        let shouty = single("Allow", json!("*"), json!("KMS:decrypt"), json!({}));
        assert_eq!(
            decide(&shouty, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&shouty, &alice(), "KMS:DECRYPT", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&shouty, &alice(), "kms:Decrypts", &[], false),
            Decision::ImplicitDeny
        );

        let one_char = single("Allow", json!("*"), json!("kms:?ncrypt"), json!({}));
        assert_eq!(
            decide(&one_char, &alice(), "kms:Encrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&one_char, &alice(), "kms:ReEncrypt", &[], false),
            Decision::ImplicitDeny
        );

        let everything = single("Allow", json!("*"), json!("*"), json!({}));
        assert_eq!(
            decide(&everything, &alice(), "kms:Sign", &[], false),
            Decision::Allow
        );
    }

    #[test]
    fn action_list_matches_any_entry() {
        let policy = single(
            "Allow",
            json!("*"),
            json!(["kms:Encrypt", "kms:Decrypt"]),
            json!({}),
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Encrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Sign", &[], false),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn not_action_covers_every_other_action() {
        let allow = policy(json!({"Statement": {"Effect": "Allow", "Principal": "*",
            "NotAction": ["kms:ScheduleKeyDeletion", "kms:Disable*"], "Resource": "*"}}));
        assert_eq!(
            decide(&allow, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&allow, &alice(), "kms:ScheduleKeyDeletion", &[], false),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&allow, &alice(), "kms:disablekey", &[], false),
            Decision::ImplicitDeny
        );

        let deny_all_but_decrypt = policy(json!({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": "*", "NotAction": "kms:Decrypt", "Resource": "*"},
        ]}));
        assert_eq!(
            decide(&deny_all_but_decrypt, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&deny_all_but_decrypt, &alice(), "kms:Encrypt", &[], false),
            Decision::ExplicitDeny
        );
    }

    // --- principals and resources ------------------------------------------------------------

    #[test]
    fn principal_arn_list_matches_exactly_the_listed_principals() {
        let bob = user(ACCOUNT, "bob");
        let carol = user(ACCOUNT, "carol");
        let policy = single(
            "Allow",
            json!({"AWS": [alice().arn, bob.arn]}),
            json!("kms:Decrypt"),
            json!({}),
        );
        // Named principals need no delegation.
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &bob, "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &carol, "kms:Decrypt", &[], true),
            Decision::ImplicitDeny
        );
        let alice_elsewhere = Principal {
            arn: format!("{}-2", alice().arn),
            account_id: ACCOUNT.to_owned(),
        };
        assert_eq!(
            decide(&policy, &alice_elsewhere, "kms:Decrypt", &[], true),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn star_principals_match_anyone() {
        let outsider = user(OTHER_ACCOUNT, "mallory");
        for principal in [
            json!("*"),
            json!({"AWS": "*"}),
            json!({"AWS": [alice().arn, "*"]}),
        ] {
            let policy = single("Allow", principal, json!("kms:Decrypt"), json!({}));
            assert_eq!(
                decide(&policy, &outsider, "kms:Decrypt", &[], false),
                Decision::Allow
            );
        }
    }

    #[test]
    fn resource_must_be_star_or_match_the_key_arn() {
        let exact = policy(json!({"Statement": {"Effect": "Allow", "Principal": "*",
            "Action": "kms:*", "Resource": KEY_ARN}}));
        let other_key =
            "arn:aws:kms:us-east-1:111122223333:key/ffffffff-0000-0000-0000-000000000000";
        assert_eq!(
            decide(&exact, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide_on(&exact, &alice(), "kms:Decrypt", other_key, &[], false),
            Decision::ImplicitDeny
        );

        let pattern = policy(json!({"Statement": {"Effect": "Allow", "Principal": "*",
            "Action": "kms:*", "Resource": ["arn:aws:kms:*:111122223333:key/*"]}}));
        assert_eq!(
            decide_on(&pattern, &alice(), "kms:Decrypt", other_key, &[], false),
            Decision::Allow
        );
        let foreign = "arn:aws:kms:us-east-1:444455556666:key/ffffffff-0000-0000-0000-000000000000";
        assert_eq!(
            decide_on(&pattern, &alice(), "kms:Decrypt", foreign, &[], false),
            Decision::ImplicitDeny
        );
    }

    // --- conditions --------------------------------------------------------------------------

    #[test]
    fn string_equals_on_encryption_context() {
        let policy = allow_decrypt_with(
            json!({"StringEquals": {"kms:EncryptionContext:Purpose": "backup"}}),
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "backup")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "Backup")],
                false
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Other", "backup")],
                false
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn condition_key_name_is_case_insensitive_but_context_key_is_not() {
        let policy = allow_decrypt_with(
            json!({"StringEquals": {"KMS:encryptioncontext:Purpose": "backup"}}),
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "backup")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("purpose", "backup")],
                false
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn multiple_values_are_or_and_multiple_keys_and_operators_are_and() {
        let policy = allow_decrypt_with(json!({
            "StringEquals": {"kms:EncryptionContext:Team": ["red", "blue"],
                             "kms:EncryptionContext:Stage": "prod"},
            "StringLike": {"kms:EncryptionContext:App": "web-*"},
        }));
        let ok = [("Team", "blue"), ("Stage", "prod"), ("App", "web-1")];
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &ok, false),
            Decision::Allow
        );
        let wrong_team = [("Team", "green"), ("Stage", "prod"), ("App", "web-1")];
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &wrong_team, false),
            Decision::ImplicitDeny
        );
        let wrong_app = [("Team", "red"), ("Stage", "prod"), ("App", "db")];
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &wrong_app, false),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn string_like_and_not_like_wildcards() {
        let like = allow_decrypt_with(
            json!({"StringLike": {"kms:EncryptionContext:Path": "/apps/*/db?"}}),
        );
        assert_eq!(
            decide(
                &like,
                &alice(),
                "kms:Decrypt",
                &[("Path", "/apps/web/db1")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &like,
                &alice(),
                "kms:Decrypt",
                &[("Path", "/apps/a/b/dbX")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &like,
                &alice(),
                "kms:Decrypt",
                &[("Path", "/apps/web/db")],
                false
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                &like,
                &alice(),
                "kms:Decrypt",
                &[("Path", "/APPS/web/db1")],
                false
            ),
            Decision::ImplicitDeny
        );

        let not_like = allow_decrypt_with(
            json!({"StringNotLike": {"kms:EncryptionContext:Env": ["prod*", "stag*"]}}),
        );
        assert_eq!(
            decide(&not_like, &alice(), "kms:Decrypt", &[("Env", "dev")], false),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &not_like,
                &alice(),
                "kms:Decrypt",
                &[("Env", "production")],
                false
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                &not_like,
                &alice(),
                "kms:Decrypt",
                &[("Env", "staging")],
                false
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn ignore_case_operators() {
        let equals = allow_decrypt_with(
            json!({"StringEqualsIgnoreCase": {"kms:EncryptionContext:Team": "Red"}}),
        );
        assert_eq!(
            decide(&equals, &alice(), "kms:Decrypt", &[("Team", "RED")], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&equals, &alice(), "kms:Decrypt", &[("Team", "blue")], false),
            Decision::ImplicitDeny
        );

        let not_equals = allow_decrypt_with(
            json!({"StringNotEqualsIgnoreCase": {"kms:EncryptionContext:Team": "Red"}}),
        );
        assert_eq!(
            decide(
                &not_equals,
                &alice(),
                "kms:Decrypt",
                &[("Team", "rEd")],
                false
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                &not_equals,
                &alice(),
                "kms:Decrypt",
                &[("Team", "blue")],
                false
            ),
            Decision::Allow
        );
    }

    #[test]
    fn negated_operator_on_a_missing_key_holds_as_in_iam() {
        // IAM: "If the policy condition requires that the key is not matched ... and the key
        // is not present, the condition is true." So this Deny catches context-less calls too.
        let policy = policy(json!({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"StringNotEquals": {"kms:EncryptionContext:Tenant": "acme"}}},
        ]}));
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Tenant", "acme")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Tenant", "evil")],
                false
            ),
            Decision::ExplicitDeny
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn for_all_values_on_encryption_context_keys() {
        let policy = allow_decrypt_with(json!({"ForAllValues:StringEquals":
            {"kms:EncryptionContextKeys": ["Purpose", "Team"]}}));
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[("Purpose", "x")], false),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "x"), ("Team", "y")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "x"), ("Extra", "z")],
                false
            ),
            Decision::ImplicitDeny
        );
        // The empty set satisfies ForAllValues.
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
    }

    #[test]
    fn for_any_value_on_encryption_context_keys() {
        let policy = allow_decrypt_with(json!({"ForAnyValue:StringEquals":
            {"kms:EncryptionContextKeys": "Purpose"}}));
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "x"), ("Other", "y")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[("Other", "y")], false),
            Decision::ImplicitDeny
        );
        // The empty set never satisfies ForAnyValue.
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );

        let like = allow_decrypt_with(
            json!({"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": "aws:*"}}),
        );
        assert_eq!(
            decide(
                &like,
                &alice(),
                "kms:Decrypt",
                &[("aws:pipe", "1"), ("b", "2")],
                false
            ),
            Decision::Allow
        );
    }

    #[test]
    fn for_all_values_with_a_negated_operator_forbids_listed_keys() {
        let policy = allow_decrypt_with(json!({"ForAllValues:StringNotEquals":
            {"kms:EncryptionContextKeys": "Secret"}}));
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("A", "1"), ("B", "2")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("A", "1"), ("Secret", "2")],
                false
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn if_exists_passes_a_missing_key_but_still_checks_a_present_one() {
        let policy = allow_decrypt_with(
            json!({"StringEqualsIfExists": {"kms:EncryptionContext:Purpose": "backup"}}),
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[("Other", "1")], false),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "backup")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "other")],
                false
            ),
            Decision::ImplicitDeny
        );

        let any = allow_decrypt_with(
            json!({"ForAnyValue:StringEqualsIfExists": {"kms:EncryptionContextKeys": "Purpose"}}),
        );
        assert_eq!(
            decide(&any, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&any, &alice(), "kms:Decrypt", &[("Other", "1")], false),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn null_tests_presence() {
        let requires_context =
            allow_decrypt_with(json!({"Null": {"kms:EncryptionContextKeys": "false"}}));
        assert_eq!(
            decide(
                &requires_context,
                &alice(),
                "kms:Decrypt",
                &[("A", "1")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(&requires_context, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );

        let requires_absence =
            allow_decrypt_with(json!({"Null": {"kms:EncryptionContext:Debug": true}}));
        assert_eq!(
            decide(
                &requires_absence,
                &alice(),
                "kms:Decrypt",
                &[("A", "1")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &requires_absence,
                &alice(),
                "kms:Decrypt",
                &[("Debug", "1")],
                false
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn caller_account_condition() {
        let policy = allow_decrypt_with(json!({"StringEquals": {"kms:CallerAccount": ACCOUNT}}));
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        let outsider = user(OTHER_ACCOUNT, "mallory");
        assert_eq!(
            decide(&policy, &outsider, "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );

        // A bare JSON number is compared as its decimal text.
        let numeric =
            allow_decrypt_with(json!({"StringEquals": {"kms:calleraccount": 111_122_223_333_u64}}));
        assert_eq!(
            decide(&numeric, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
    }

    #[test]
    fn principal_arn_condition() {
        let policy = allow_decrypt_with(
            json!({"StringLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:role/admin-*"}}),
        );
        let admin = Principal {
            arn: "arn:aws:iam::111122223333:role/admin-ops".to_owned(),
            account_id: ACCOUNT.to_owned(),
        };
        assert_eq!(
            decide(&policy, &admin, "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn via_service_and_unknown_keys_are_never_present() {
        let via = allow_decrypt_with(
            json!({"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}}),
        );
        assert_eq!(
            decide(&via, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );
        let unknown = allow_decrypt_with(json!({"StringEquals": {"aws:SourceVpc": "vpc-1"}}));
        assert_eq!(
            decide(&unknown, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );
        let unknown_if_exists =
            allow_decrypt_with(json!({"StringEqualsIfExists": {"aws:SourceVpc": "vpc-1"}}));
        assert_eq!(
            decide(&unknown_if_exists, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
    }

    #[test]
    fn bool_operator() {
        let missing = allow_decrypt_with(json!({"Bool": {"kms:ViaService": "true"}}));
        assert_eq!(
            decide(&missing, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );
        let if_exists = allow_decrypt_with(json!({"BoolIfExists": {"kms:ViaService": true}}));
        assert_eq!(
            decide(&if_exists, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        let on_context =
            allow_decrypt_with(json!({"Bool": {"kms:EncryptionContext:Audited": "TRUE"}}));
        assert_eq!(
            decide(
                &on_context,
                &alice(),
                "kms:Decrypt",
                &[("Audited", "true")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &on_context,
                &alice(),
                "kms:Decrypt",
                &[("Audited", "false")],
                false
            ),
            Decision::ImplicitDeny
        );
    }

    // --- parsing -----------------------------------------------------------------------------

    #[test]
    fn single_object_statement_is_accepted() {
        let policy = policy_from(
            r#"{"Version":"2012-10-17","Statement":
            {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},
             "Action":"kms:Decrypt","Resource":"*"}}"#,
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
    }

    #[test]
    fn bad_effect_is_refused_naming_the_statement() {
        let e = statement_err(json!({"Sid": "Oops", "Effect": "allow", "Principal": "*",
            "Action": "kms:*", "Resource": "*"}));
        assert!(
            matches!(&e, PolicyError::Statement { at, reason }
            if at == "Statement[0] (Sid \"Oops\")" && reason.contains("Effect")),
            "{e}"
        );
    }

    #[test]
    fn unknown_statement_field_is_refused() {
        let e = statement_err(
            json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*",
            "Resource": "*", "Conditions": {}}),
        );
        assert_eq!(e.to_string(), "Statement[0]: unknown field \"Conditions\"");
    }

    #[test]
    fn error_names_the_failing_statement_index() {
        let good = json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"});
        let bad = json!({"Sid": "Second", "Effect": "Allow", "Principal": "*", "Resource": "*"});
        let e = parse_err(&json!({"Statement": [good, bad]}).to_string());
        assert_eq!(
            e.to_string(),
            "Statement[1] (Sid \"Second\"): missing Action (or NotAction)"
        );
    }

    #[test]
    fn unknown_top_level_field_is_refused() {
        let e = parse_err(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"},"Extra":1}"#,
        );
        assert_eq!(
            e.to_string(),
            "policy document: unknown top-level field \"Extra\""
        );
        let e = parse_err(r#"{"Version":"2012-10-17","Extra":1,"Statement":[]}"#);
        assert_eq!(
            e.to_string(),
            "policy document: unknown top-level field \"Extra\""
        );
    }

    #[test]
    fn unknown_condition_operator_is_refused() {
        let e = statement_err(
            json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*",
            "Resource": "*", "Condition": {"StringEqualz": {"kms:CallerAccount": ACCOUNT}}}),
        );
        assert!(
            e.to_string()
                .contains("unknown condition operator \"StringEqualz\""),
            "{e}"
        );
        for bad in [
            "NumericEquals",
            "ForSomeValues:StringEquals",
            "NullIfExists",
            "ForAnyValue:Null",
        ] {
            let e = statement_err(
                json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*",
                "Resource": "*", "Condition": {bad: {"kms:CallerAccount": "true"}}}),
            );
            assert!(matches!(e, PolicyError::Statement { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_condition_shapes_are_refused() {
        for condition in [
            json!({"Bool": {"kms:ViaService": "yes"}}),
            json!({"StringEquals": {"kms:CallerAccount": []}}),
            json!({"StringEquals": {"kms:CallerAccount": {"a": 1}}}),
            json!({"StringEquals": {}}),
            json!({"StringEquals": {"CallerAccount": "1"}}),
            json!({"StringEquals": {"kms:EncryptionContext:": "1"}}),
            json!(["StringEquals"]),
        ] {
            let e = statement_err(
                json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*",
                "Resource": "*", "Condition": condition}),
            );
            assert!(
                matches!(e, PolicyError::Statement { .. }),
                "{condition}: {e}"
            );
        }
    }

    #[test]
    fn not_principal_and_not_resource_are_unsupported() {
        let e = statement_err(
            json!({"Effect": "Deny", "NotPrincipal": {"AWS": alice().arn},
            "Action": "kms:*", "Resource": "*"}),
        );
        assert!(
            matches!(
                e,
                PolicyError::Unsupported {
                    element: "NotPrincipal",
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains("NotPrincipal is not supported"),
            "{e}"
        );
        let e = statement_err(
            json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*",
            "NotResource": "arn:aws:kms:*"}),
        );
        assert!(
            matches!(
                e,
                PolicyError::Unsupported {
                    element: "NotResource",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn malformed_statements_are_refused() {
        let base = json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"});
        let variants: [(&str, serde_json::Value); 9] = [
            ("Principal", json!({"Service": "logs.amazonaws.com"})),
            ("Principal", json!({"AWS": "alice"})),
            (
                "Principal",
                json!({"AWS": "arn:aws:iam::111122223333:user/*"}),
            ),
            ("Principal", json!({})),
            ("Action", json!("Decrypt")),
            ("Action", json!([])),
            ("Resource", json!("key/1")),
            ("Effect", json!(true)),
            ("Sid", json!(7)),
        ];
        for (field, value) in variants {
            let mut statement = base.clone();
            statement[field] = value.clone();
            let e = statement_err(statement);
            assert!(
                matches!(e, PolicyError::Statement { .. }),
                "{field}={value}: {e}"
            );
        }
        let mut both = base.clone();
        both["NotAction"] = json!("kms:Decrypt");
        assert!(statement_err(both).to_string().contains("not both"));
        for missing in ["Effect", "Principal", "Action", "Resource"] {
            let mut statement = base.clone();
            if let Some(fields) = statement.as_object_mut() {
                fields.remove(missing);
            }
            let e = statement_err(statement);
            assert!(e.to_string().contains(&format!("missing {missing}")), "{e}");
        }
    }

    #[test]
    fn malformed_documents_are_refused() {
        for document in [
            "[]",
            "\"policy\"",
            r#"{"Version":"2012-10-17"}"#,
            r#"{"Statement":[]}"#,
            r#"{"Statement":"Allow"}"#,
            r#"{"Version":"2020-01-01","Statement":[]}"#,
            r#"{"Id":5,"Statement":[]}"#,
        ] {
            assert!(
                matches!(parse_err(document), PolicyError::Document(_)),
                "{document}"
            );
        }
        let e = parse_err(r#"{"Statement":[1]}"#);
        assert!(e.to_string().contains("must be an object"), "{e}");
    }

    #[test]
    fn not_json_is_refused() {
        for document in ["", "{", "not json", r#"{"Statement":[]} trailing"#] {
            assert!(
                matches!(parse_err(document), PolicyError::NotJson(_)),
                "{document:?}"
            );
        }
    }

    #[test]
    fn duplicate_field_names_are_refused() {
        let e = parse_err(
            r#"{"Statement":{"Effect":"Deny","Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}}"#,
        );
        assert!(
            matches!(&e, PolicyError::NotJson(m) if m.contains("duplicate field \"Effect\"")),
            "{e}"
        );
    }

    #[test]
    fn size_limit_is_32_kib() {
        let document = KeyPolicy::default_document(ACCOUNT);
        let at_limit = format!("{document:<width$}", width = MAX_POLICY_BYTES);
        assert_eq!(at_limit.len(), MAX_POLICY_BYTES);
        assert!(KeyPolicy::parse(&at_limit).is_ok());
        let over = format!("{at_limit} ");
        assert_eq!(
            parse_err(&over),
            PolicyError::TooLarge {
                size: MAX_POLICY_BYTES + 1,
                limit: MAX_POLICY_BYTES
            }
        );
    }

    #[test]
    fn errors_never_echo_huge_input() {
        let huge = "X".repeat(20_000);
        let e = statement_err(json!({"Sid": huge, "Effect": "Allow", "Principal": "*",
            "Action": "kms:*", "Resource": "*", huge.clone(): 1}));
        assert!(e.to_string().len() < 300, "{} bytes", e.to_string().len());
        let e = parse_err(&format!(r#"{{"{huge}":1,"{huge}":2}}"#));
        assert!(e.to_string().len() < 300, "{} bytes", e.to_string().len());
    }

    // --- lockout -----------------------------------------------------------------------------

    #[test]
    fn policy_allowing_only_decrypt_locks_the_admin_out() {
        let admin = user(ACCOUNT, "admin");
        let policy = single(
            "Allow",
            json!({"AWS": admin.arn}),
            json!("kms:Decrypt"),
            json!({}),
        );
        assert!(policy.would_lock_out(&admin, KEY_ARN, ACCOUNT, &|_| true));
    }

    #[test]
    fn default_policy_does_not_lock_out_when_the_account_grants_access() {
        let admin = user(ACCOUNT, "admin");
        let policy = policy_from(&KeyPolicy::default_document(ACCOUNT));
        assert!(!policy.would_lock_out(&admin, KEY_ARN, ACCOUNT, &|_| true));
        // If the account's own permissions do not let the caller in, it is locked out.
        assert!(policy.would_lock_out(&admin, KEY_ARN, ACCOUNT, &|_| false));
    }

    #[test]
    fn deny_on_put_key_policy_for_the_caller_locks_out() {
        let admin = user(ACCOUNT, "admin");
        let policy = policy(json!({"Statement": [
            {"Effect": "Allow", "Principal": {"AWS": admin.arn}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": {"AWS": admin.arn}, "Action": "kms:PutKeyPolicy", "Resource": "*"},
        ]}));
        assert!(policy.would_lock_out(&admin, KEY_ARN, ACCOUNT, &|_| true));
        let other = user(ACCOUNT, "other-admin");
        let others_view = single(
            "Allow",
            json!({"AWS": other.arn}),
            json!("kms:*"),
            json!({}),
        );
        assert!(!others_view.would_lock_out(&other, KEY_ARN, ACCOUNT, &|_| false));
    }

    #[test]
    fn lockout_check_asks_about_put_key_policy_on_this_key() {
        let admin = user(ACCOUNT, "admin");
        let policy = policy_from(&KeyPolicy::default_document(ACCOUNT));
        let asked = std::cell::RefCell::new(Vec::new());
        let delegate = |request: &AccessRequest<'_>| {
            asked.borrow_mut().push((
                request.action.to_owned(),
                request.resource_arn.to_owned(),
                request.key_account_id.to_owned(),
                request.encryption_context.len(),
            ));
            true
        };
        assert!(!policy.would_lock_out(&admin, KEY_ARN, ACCOUNT, &delegate));
        assert_eq!(
            *asked.borrow(),
            vec![(
                "kms:PutKeyPolicy".to_owned(),
                KEY_ARN.to_owned(),
                ACCOUNT.to_owned(),
                0
            )]
        );
    }

    // --- wildcard matching -------------------------------------------------------------------

    #[test]
    fn wildcard_match_cases() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "a", false),
            ("a", "", false),
            ("?", "", false),
            ("?", "é", true),
            ("a*b", "ab", true),
            ("a*b", "axxb", true),
            ("a*b", "axxbc", false),
            ("a*b*c", "abxbxc", true),
            ("*a*a*", "banana", true),
            ("a**", "a", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("ABC", "abc", false),
            ("*x", "xxxxxxy", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                wildcard_match(pattern, text),
                expected,
                "{pattern:?} vs {text:?}"
            );
        }
    }

    /// A slow, obviously-correct matcher to check the fast one against.
    fn reference_match(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('*', rest)) => (0..=text.len()).any(|skip| reference_match(rest, &text[skip..])),
            Some((&want, rest)) => match text.split_first() {
                Some((&got, tail)) => (want == '?' || want == got) && reference_match(rest, tail),
                None => false,
            },
        }
    }

    // --- properties --------------------------------------------------------------------------

    fn arb_principal() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(json!("*")),
            Just(json!({"AWS": "*"})),
            Just(json!({"AWS": ACCOUNT})),
            Just(json!({"AWS": format!("arn:aws:iam::{OTHER_ACCOUNT}:root")})),
            Just(json!({"AWS": [alice().arn, user(ACCOUNT, "bob").arn]})),
        ]
    }

    fn arb_action_pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_owned()),
            Just("kms:*".to_owned()),
            Just("kms:Decrypt".to_owned()),
            Just("KMS:gen*".to_owned()),
            Just("kms:?ncrypt".to_owned()),
        ]
    }

    fn arb_condition() -> impl Strategy<Value = serde_json::Value> {
        let operator = prop_oneof![
            Just("StringEquals"),
            Just("StringNotEquals"),
            Just("StringLike"),
            Just("ForAnyValue:StringLike"),
            Just("ForAllValues:StringEquals"),
            Just("StringEqualsIfExists"),
        ];
        let key = prop_oneof![
            Just("kms:EncryptionContext:Team"),
            Just("kms:EncryptionContextKeys"),
            Just("kms:CallerAccount"),
            Just("kms:ViaService"),
        ];
        prop_oneof![
            Just(json!({})),
            (operator, key, "[a-c*]{1,3}").prop_map(|(op, key, value)| json!({op: {key: value}})),
            Just(json!({"Null": {"kms:EncryptionContextKeys": "true"}})),
        ]
    }

    fn arb_statement() -> impl Strategy<Value = serde_json::Value> {
        (
            prop_oneof![Just("Allow"), Just("Deny")],
            arb_principal(),
            proptest::collection::vec(arb_action_pattern(), 1..3),
            any::<bool>(),
            prop_oneof![
                Just(json!("*")),
                Just(json!(KEY_ARN)),
                Just(json!("arn:aws:kms:*:*:key/other"))
            ],
            arb_condition(),
        )
            .prop_map(
                |(effect, principal, actions, not_action, resource, condition)| {
                    let action_field = if not_action { "NotAction" } else { "Action" };
                    json!({"Effect": effect, "Principal": principal, action_field: actions,
                       "Resource": resource, "Condition": condition})
                },
            )
    }

    fn arb_request() -> impl Strategy<Value = (Principal, String, BTreeMap<String, String>, bool)> {
        (
            prop_oneof![
                Just(alice()),
                Just(user(ACCOUNT, "bob")),
                Just(user(OTHER_ACCOUNT, "mallory"))
            ],
            prop_oneof![
                Just("kms:Decrypt".to_owned()),
                Just("kms:Encrypt".to_owned()),
                Just("kms:GenerateDataKey".to_owned()),
                Just("kms:PutKeyPolicy".to_owned())
            ],
            proptest::collection::btree_map("Team|Stage|[a-c]", "[a-c]{0,2}", 0..3),
            any::<bool>(),
        )
    }

    proptest! {
        #[test]
        fn wildcard_match_agrees_with_reference(pattern in "[ab*?]{0,8}", text in "[ab]{0,10}") {
            let p: Vec<char> = pattern.chars().collect();
            let t: Vec<char> = text.chars().collect();
            prop_assert_eq!(wildcard_match(&pattern, &text), reference_match(&p, &t));
        }

        #[test]
        fn explicit_deny_star_always_wins(
            statements in proptest::collection::vec(arb_statement(), 0..5),
            position in any::<prop::sample::Index>(),
            (who, action, ctx, delegate) in arb_request(),
        ) {
            let mut statements = statements;
            let at = position.index(statements.len() + 1);
            statements.insert(at, json!({"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}));
            let document = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
            let policy = KeyPolicy::parse(&document);
            prop_assert!(policy.is_ok(), "{:?}", policy.err());
            if let Ok(policy) = policy {
                let request = AccessRequest {
                    principal: &who,
                    action: &action,
                    resource_arn: KEY_ARN,
                    encryption_context: &ctx,
                    key_account_id: ACCOUNT,
                };
                prop_assert_eq!(policy.evaluate(&request, &|_| delegate), Decision::ExplicitDeny);
                prop_assert!(policy.would_lock_out(&who, KEY_ARN, ACCOUNT, &|_| delegate));
            }
        }

        #[test]
        fn without_deny_statements_nothing_is_explicitly_denied(
            statements in proptest::collection::vec(arb_statement(), 1..5),
            (who, action, ctx, delegate) in arb_request(),
        ) {
            let allows: Vec<_> = statements.into_iter()
                .filter(|s| s["Effect"] == "Allow")
                .collect();
            prop_assume!(!allows.is_empty());
            let document = json!({"Statement": allows}).to_string();
            let policy = KeyPolicy::parse(&document);
            prop_assert!(policy.is_ok(), "{:?}", policy.err());
            if let Ok(policy) = policy {
                let request = AccessRequest {
                    principal: &who,
                    action: &action,
                    resource_arn: KEY_ARN,
                    encryption_context: &ctx,
                    key_account_id: ACCOUNT,
                };
                prop_assert_ne!(policy.evaluate(&request, &|_| delegate), Decision::ExplicitDeny);
            }
        }

        #[test]
        fn parse_never_panics(input in "\\PC{0,200}") {
            let _ = KeyPolicy::parse(&input);
        }
    }
}
