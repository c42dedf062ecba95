//! Coffer: AWS KMS, Secrets Manager and SSM Parameter Store for Kubernetes.
//!
//! Modules own one idea each:
//! - [`aws`]: the AWS wire protocol pieces (SigV4 request verification).
//! - [`crypto`]: bytes and keys (envelope encryption, root keys); knows nothing of Kubernetes or HTTP.
//! - [`engine`]: the domain (keys, policies, rotation); knows no store backend and no front end.
//! - [`store`]: where records live, with optimistic concurrency.
//! - [`aws`]: the AWS JSON 1.1 front end (SigV4, exceptions, throttling, audit).
//! - [`resources`]: the custom resource types and their CRDs.
//! - [`server`]: the standalone `coffer server`.
//! - [`serve`]: HTTP and HTTPS serving (certificates reloaded on change) and health routes.
//! - [`metrics`]: one Prometheus registry for the API's and the controller's metrics.
#![forbid(unsafe_code)]

pub mod aws;
pub mod controller;
pub mod credentials_proxy;
pub mod crypto;
pub mod engine;
#[cfg(test)]
mod fake_api;
pub mod fault;
pub mod fsutil;
pub mod leader;
pub mod metrics;
#[cfg(test)]
mod mock_api;
pub mod redact;
pub mod resources;
pub mod serve;
pub mod server;
pub mod store;
