//! `coffer controller`: Kubernetes mode.
pub mod kmskey;
#[cfg(test)]
mod tests;
