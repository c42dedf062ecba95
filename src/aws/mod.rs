//! The AWS side of the wire: request authentication for the KMS, Secrets Manager and SSM APIs.
pub mod sigv4;
