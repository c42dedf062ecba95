//! Faults: failures that are Coffer's, not the caller's. A fault keeps what was being done and
//! the error that stopped it, so the log line at the edge tells the whole chain
//! ([`crate::redact::chain`]), while the caller learns only that something failed.

use std::error::Error;

/// Any error, as a fault's cause.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// What was being done when something broke (and to what), and why.
#[derive(Debug, thiserror::Error)]
#[error("{context}{}", subject.as_ref().map(|subject| format!(" ({subject})")).unwrap_or_default())]
pub struct Fault {
    context: &'static str,
    /// What it was being done to, when that helps: an object's name, never a value.
    subject: Option<String>,
    #[source]
    source: Option<BoxError>,
}

impl Fault {
    /// A broken invariant found while doing `context`.
    pub fn new(context: &'static str) -> Self {
        Self {
            context,
            subject: None,
            source: None,
        }
    }

    /// A failure of `source` while doing `context`.
    pub fn caused_by(context: &'static str, source: impl Into<BoxError>) -> Self {
        Self {
            context,
            subject: None,
            source: Some(source.into()),
        }
    }

    /// Names what the work was being done to.
    pub fn about(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// What was being done.
    pub fn context(&self) -> &'static str {
        self.context
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_keeps_its_cause() {
        let parse = serde_json::from_str::<u32>("x").unwrap_err();
        let fault = Fault::caused_by("key record", parse);
        assert_eq!(fault.to_string(), "key record");
        assert!(fault.source().is_some());
        assert!(Fault::new("invariant").source().is_none());
        assert_eq!(
            Fault::new("writing").about("secret s").to_string(),
            "writing (secret s)"
        );
    }
}
