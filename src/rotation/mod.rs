//! The rotation strategies: where a rotation's I/O lives (databases, Jobs, webhooks). The
//! engine runs the four steps ([`crate::engine::rotation`]) and knows the strategies only by
//! the names [`registry`] gives them.
//!
//! Settings, as recorded with a secret's rotation (`settings` of [`StepRequest`]), by strategy:
//! - `generate`: the password options of GetRandomPassword (`passwordLength`,
//!   `excludeCharacters`, `excludeNumbers`, `excludePunctuation`, `excludeUppercase`,
//!   `excludeLowercase`, `includeSpace`, `requireEachIncludedType`) and optionally `template` (a
//!   JSON object as text) with `generateStringKey`, the property that takes the password;
//! - `postgres` and `mysql`: `variant` (`singleUser` or `alternatingUsers`), `masterSecret` (a
//!   secret of the namespace, by name or ARN; else the value's `masterarn`), `tls` (`disable`,
//!   `require`, `verifyFull`), `caBundle` (base64 PEM), and the password options as `password`;
//! - `job`: `template` (a JobTemplateSpec);
//! - `webhook`: `url`, `caBundle` (base64 PEM), `signingSecret` (a secret of the namespace
//!   whose value is the HMAC key).
//!
//! [`StepRequest`]: crate::engine::rotation::StepRequest

pub mod database;
pub mod job;
pub mod mysql;
pub mod postgres;
pub mod webhook;
