//! Coffer: AWS KMS, Secrets Manager and SSM Parameter Store for Kubernetes.
//!
//! Modules own one idea each (docs/architecture.md has the whole picture):
//! - [`crypto`]: bytes and keys (envelope encryption, root keys); knows nothing of Kubernetes or HTTP.
//! - [`engine`]: the domain (keys, policies, scheduling, rotation); knows no store backend and no
//!   front end.
//! - [`store`]: where records live, with optimistic concurrency: embedded, or a keeper per kind
//!   of record in the Kubernetes API server.
//! - [`aws`]: the AWS JSON 1.1 front end (SigV4, operation tables, exceptions, throttling, audit).
//! - [`controller`]: `coffer controller`, the reconcilers and the leader's tasks.
//! - [`resources`]: the custom resource types and their CRDs.
//! - [`delivery`]: what a CSI volume holds, read with the pod's own identity.
//! - [`csi`]: `coffer csi`, the CSI node plugin that mounts and refreshes those volumes.
//! - [`injection`]: the admission webhook that adds that volume to pods asking by annotation.
//! - [`csi_provider`]: `coffer csi-provider`, a Secrets Store CSI Driver provider over the same.
//! - [`kms_plugin`]: `coffer kms-plugin`, a KMS v2 provider that seals kube-apiserver's data keys.
//! - [`kubectl_plugin`]: the `kubectl-coffer` binary (`kubectl coffer seal`, `get`, `status`, ...).
//! - [`server`]: the standalone `coffer server`.
//! - [`serve`]: HTTP and HTTPS serving (certificates reloaded on change) and health routes.
//! - [`metrics`]: one Prometheus registry for the API's, the controller's and the Kubernetes
//!   client's metrics.
//! - [`fault`], [`redact`]: failures that keep their causes, described once where logged.
#![forbid(unsafe_code)]

pub mod aws;
pub mod controller;
pub mod credentials_proxy;
pub mod crypto;
pub mod csi;
pub mod csi_provider;
pub mod delivery;
pub mod engine;
pub mod fault;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod https_client;
pub mod injection;
pub mod kms_plugin;
pub mod kubectl_plugin;
pub mod leader;
pub mod metrics;
pub mod redact;
pub mod resources;
pub mod rotation;
pub mod serve;
pub mod server;
pub mod store;
#[cfg(test)]
mod test_support;
