//! GetRandomPassword: characters drawn uniformly from the operating system's generator (through
//! `rand`'s thread generator, reseeded from it), with AWS's options and character classes.

use rand::seq::{IndexedRandom as _, SliceRandom as _};

use crate::crypto::SecretBytes;

use super::SecretsError;

/// AWS's punctuation class.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
const DEFAULT_LENGTH: i64 = 32;
const MAX_LENGTH: i64 = 4096;

/// GetRandomPassword's options; `None` takes AWS's default.
#[derive(Clone, Debug, Default)]
pub struct PasswordOptions {
    pub length: Option<i64>,
    pub exclude_characters: Option<String>,
    pub exclude_numbers: bool,
    pub exclude_punctuation: bool,
    pub exclude_uppercase: bool,
    pub exclude_lowercase: bool,
    pub include_space: bool,
    /// Default true: at least one character of every class left in.
    pub require_each_included_type: Option<bool>,
}

/// A password as the options ask.
pub fn random_password(options: &PasswordOptions) -> Result<SecretBytes, SecretsError> {
    let length = options.length.unwrap_or(DEFAULT_LENGTH);
    if !(1..=MAX_LENGTH).contains(&length) {
        return Err(SecretsError::InvalidParameter(format!(
            "PasswordLength must be between 1 and {MAX_LENGTH}."
        )));
    }
    let length = usize::try_from(length).unwrap_or(1);
    let excluded = options.exclude_characters.as_deref().unwrap_or("");
    if excluded.chars().count() > 4096 {
        return Err(SecretsError::InvalidParameter(
            "ExcludeCharacters must be at most 4096 characters.".into(),
        ));
    }
    let mut classes: Vec<Vec<u8>> = Vec::new();
    let mut add = |wanted: bool, class: &[u8]| {
        if wanted {
            let kept: Vec<u8> = class
                .iter()
                .copied()
                .filter(|c| !excluded.contains(char::from(*c)))
                .collect();
            if !kept.is_empty() {
                classes.push(kept);
            }
        }
    };
    add(!options.exclude_lowercase, b"abcdefghijklmnopqrstuvwxyz");
    add(!options.exclude_uppercase, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    add(!options.exclude_numbers, b"0123456789");
    add(!options.exclude_punctuation, PUNCTUATION.as_bytes());
    add(options.include_space, b" ");
    let alphabet: Vec<u8> = classes.iter().flatten().copied().collect();
    if alphabet.is_empty() {
        return Err(SecretsError::InvalidParameter(
            "The options leave no characters to choose from.".into(),
        ));
    }
    let require_each = options.require_each_included_type.unwrap_or(true);
    if require_each && classes.len() > length {
        return Err(SecretsError::InvalidParameter(
            "PasswordLength is too short to include every required character type.".into(),
        ));
    }
    let mut rng = rand::rng();
    let mut password = zeroize::Zeroizing::new(Vec::with_capacity(length));
    if require_each {
        // One of each class, then the rest from all of them, then shuffled so that the classes'
        // characters are not at fixed places.
        for class in &classes {
            password.extend(class.choose(&mut rng).copied());
        }
    }
    while password.len() < length {
        password.extend(alphabet.choose(&mut rng).copied());
    }
    password.shuffle(&mut rng);
    Ok(SecretBytes::from_slice(&password))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(options: &PasswordOptions) -> String {
        String::from_utf8(random_password(options).unwrap().expose().to_vec()).unwrap()
    }

    #[test]
    fn defaults_are_32_characters_of_every_class() {
        for _ in 0..50 {
            let password = text(&PasswordOptions::default());
            assert_eq!(password.len(), 32);
            assert!(password.chars().any(|c| c.is_ascii_lowercase()));
            assert!(password.chars().any(|c| c.is_ascii_uppercase()));
            assert!(password.chars().any(|c| c.is_ascii_digit()));
            assert!(password.chars().any(|c| PUNCTUATION.contains(c)));
            assert!(!password.contains(' '));
        }
    }

    #[test]
    fn exclusions_and_space_are_honoured() {
        let options = PasswordOptions {
            length: Some(200),
            exclude_characters: Some("abc012".into()),
            exclude_punctuation: true,
            exclude_uppercase: true,
            include_space: true,
            ..PasswordOptions::default()
        };
        for _ in 0..20 {
            let password = text(&options);
            assert_eq!(password.len(), 200);
            assert!(
                password
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == ' ')
            );
            assert!(!password.chars().any(|c| "abc012".contains(c)));
            assert!(password.contains(' '));
        }
    }

    #[test]
    fn impossible_options_are_invalid_parameters() {
        for options in [
            PasswordOptions {
                length: Some(0),
                ..PasswordOptions::default()
            },
            PasswordOptions {
                length: Some(4097),
                ..PasswordOptions::default()
            },
            PasswordOptions {
                exclude_lowercase: true,
                exclude_uppercase: true,
                exclude_numbers: true,
                exclude_punctuation: true,
                ..PasswordOptions::default()
            },
            PasswordOptions {
                length: Some(3),
                ..PasswordOptions::default()
            },
        ] {
            assert!(matches!(
                random_password(&options),
                Err(SecretsError::InvalidParameter(_))
            ));
        }
        // Without the requirement, a short password is fine.
        let short = PasswordOptions {
            length: Some(3),
            require_each_included_type: Some(false),
            ..PasswordOptions::default()
        };
        assert_eq!(text(&short).len(), 3);
    }
}
