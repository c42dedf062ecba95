//! Errors described for a log line: the whole chain of causes, each told without what it might
//! quote. Errors keep their sources all the way up; this is the one place they are turned into
//! text, at the boundary where they are logged.
//!
//! Some sources quote what was sent or received: the Kubernetes API server's messages may quote
//! an object, and serde's may quote a value it could not parse. Those are told by their kind and
//! code only.

use std::error::Error;
use std::fmt::Write as _;

/// `error` and its causes, outermost first, joined by `: `.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = String::new();
    let mut next: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(error) = next {
        let mut own = String::new();
        let _ = write!(own, "{}", Safe(error));
        // Many errors already print their cause in their own message: say it once.
        if !text.contains(&own) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&own);
        }
        // A source told by its kind alone ends the chain: its own causes carry the detail.
        next = if quotes_content(error) {
            None
        } else {
            error.source()
        };
    }
    text
}

/// Whether an error's own message may quote content.
fn quotes_content(error: &(dyn Error + 'static)) -> bool {
    error.is::<kube::Error>() || error.is::<serde_json::Error>()
}

struct Safe<'a>(&'a (dyn Error + 'static));

impl std::fmt::Display for Safe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(error) = self.0.downcast_ref::<kube::Error>() {
            return match error {
                kube::Error::Api(status) => write!(
                    f,
                    "Kubernetes API server answered {} {}",
                    status.code, status.reason
                ),
                kube::Error::HyperError(_) | kube::Error::Service(_) => {
                    f.write_str("Kubernetes API server unreachable")
                }
                kube::Error::SerdeError(_) => f.write_str("unreadable answer from the API server"),
                _ => f.write_str("Kubernetes client error"),
            };
        }
        if let Some(error) = self.0.downcast_ref::<serde_json::Error>() {
            return write!(
                f,
                "malformed JSON ({:?} at line {}, column {})",
                error.classify(),
                error.line(),
                error.column()
            );
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the record")]
    struct Outer(#[source] serde_json::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("opening the file: {0}")]
    struct Echoing(#[source] std::io::Error);

    #[test]
    fn a_cause_an_error_already_prints_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(chain(&Echoing(io)), "opening the file: no such file");
    }

    #[test]
    fn chains_name_every_cause_without_quoting_values() {
        let parse = serde_json::from_str::<u32>("\"hunter2\"").unwrap_err();
        assert!(
            parse.to_string().contains("hunter2"),
            "serde quotes the value"
        );
        let text = chain(&Outer(parse));
        assert!(
            text.starts_with("reading the record: malformed JSON"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");

        let status =
            kube::core::Status::failure("Secret \"s\" is invalid: data: hunter2", "Invalid")
                .with_code(422);
        let text = chain(&kube::Error::Api(Box::new(status)));
        assert_eq!(text, "Kubernetes API server answered 422 Invalid");
    }
}
