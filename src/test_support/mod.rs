//! Test support: in-memory and mocked Kubernetes API servers behind tower-test connections, so
//! that the store, the reconciler and the whole controller run against something that answers
//! like an API server, without one; and requests signed as the AWS SDKs sign them.

pub mod engine;
pub mod fake_api;
pub mod https;
pub mod mock_api;
pub mod sigv4_client;
pub mod tokens;
// One file with the integration tests and benches, which include it by path.
#[path = "../../tests/support/unix_channel.rs"]
pub mod unix_channel;
