//! Accounts and ARNs. A namespace plays the part of an AWS account; its 12-digit account id is
//! derived from the namespace name, so it is stable across restarts and replicas.

use sha2::{Digest as _, Sha256};

/// The 12-digit account id of a namespace: the first eight bytes of SHA-256("coffer/account/" +
/// namespace), read as a big-endian integer, modulo 10^12, zero-padded.
pub fn account_id(namespace: &str) -> String {
    let digest = Sha256::digest(format!("coffer/account/{namespace}").as_bytes());
    let mut first = [0u8; 8];
    for (byte, digest_byte) in first.iter_mut().zip(digest.iter()) {
        *byte = *digest_byte;
    }
    format!("{:012}", u64::from_be_bytes(first) % 1_000_000_000_000)
}

/// An ARN split into the parts Coffer uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arn {
    pub service: String,
    pub region: String,
    pub account_id: String,
    /// Everything after the account: `key/ID`, `alias/NAME`, `secret:NAME-abc123`, ...
    pub resource: String,
}

impl Arn {
    /// Parses `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`. Returns `None` for anything else.
    pub fn parse(text: &str) -> Option<Arn> {
        let mut parts = text.splitn(6, ':');
        let (
            Some("arn"),
            Some(partition),
            Some(service),
            Some(region),
            Some(account),
            Some(resource),
        ) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        )
        else {
            return None;
        };
        if partition.is_empty() || service.is_empty() || resource.is_empty() {
            return None;
        }
        Some(Arn {
            service: service.to_owned(),
            region: region.to_owned(),
            account_id: account.to_owned(),
            resource: resource.to_owned(),
        })
    }
}

impl std::fmt::Display for Arn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "arn:aws:{}:{}:{}:{}",
            self.service, self.region, self.account_id, self.resource
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_stable_twelve_digits_and_distinct() {
        let a = account_id("default");
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|c| c.is_ascii_digit()));
        assert_eq!(a, account_id("default"));
        assert_ne!(a, account_id("team-a"));
    }

    #[test]
    fn arns_parse_and_print() {
        let text = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let arn = Arn::parse(text).unwrap();
        assert_eq!(arn.service, "kms");
        assert_eq!(arn.region, "us-east-1");
        assert_eq!(arn.account_id, "123456789012");
        assert_eq!(arn.resource, "key/1234abcd-12ab-34cd-56ef-1234567890ab");
        assert_eq!(arn.to_string(), text);
        // Resource parts may themselves contain colons (Secrets Manager).
        let secret = Arn::parse("arn:aws:secretsmanager:eu-west-1:1:secret:db:x").unwrap();
        assert_eq!(secret.resource, "secret:db:x");
        for bad in [
            "",
            "arn",
            "arn:aws:kms",
            "arn::kms:r:a:key/x",
            "nope:aws:kms:r:a:x",
            "arn:aws:kms:r:a:",
        ] {
            assert!(Arn::parse(bad).is_none(), "{bad}");
        }
    }
}
