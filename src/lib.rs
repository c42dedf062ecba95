//! Coffer: AWS KMS, Secrets Manager and SSM Parameter Store for Kubernetes.
//!
//! Modules own one idea each:
//! - [`aws`]: the AWS wire protocol pieces (SigV4 request verification).
//! - [`crypto`]: bytes and keys (envelope encryption, root keys); knows nothing of Kubernetes or HTTP.
//! - [`resources`]: the custom resource types and their CRDs.
//! - [`store`]: where records live, with optimistic concurrency.
//! - [`server`]: the standalone `coffer server` front end.
#![forbid(unsafe_code)]

pub mod aws;
pub mod crypto;
pub mod resources;
pub mod server;
pub mod store;
