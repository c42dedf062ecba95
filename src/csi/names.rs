//! Which file paths a volume may hold.
//!
//! A path comes from the volume's attributes, that is from whoever may create pods: it is
//! checked here, again, right before anything touches the disk, so that no name reaches outside
//! the volume or shadows its own bookkeeping (the Secrets Store CSI Driver's CVE-2020-8567 was a
//! `..` in such a name).

/// Longest path inside a volume, in bytes (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest path component, in bytes (Linux's NAME_MAX).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why a path is refused. Paths are names chosen by the volume's author, not values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("file path {0:?} is empty")]
    Empty(String),
    #[error("file path {0:?} is absolute; paths are relative to the volume")]
    Absolute(String),
    #[error("file path {0:?} holds a NUL byte")]
    Nul(String),
    #[error("file path {0:?} is longer than {MAX_PATH_BYTES} bytes")]
    TooLong(String),
    #[error("file path {0:?} has a component longer than {MAX_COMPONENT_BYTES} bytes")]
    ComponentTooLong(String),
    #[error("file path {0:?} has an empty component")]
    EmptyComponent(String),
    #[error("file path {0:?} has a `.` or `..` component")]
    DotComponent(String),
    #[error("file path {0:?} has a component starting with `..`, which the volume reserves")]
    Reserved(String),
}

/// The components of `path` when it is a safe relative path inside a volume.
pub fn components(path: &str) -> Result<Vec<&str>, NameError> {
    // Echo at most a bounded prefix of what was given.
    let shown = || path.chars().take(120).collect::<String>();
    if path.is_empty() {
        return Err(NameError::Empty(shown()));
    }
    if path.contains('\0') {
        return Err(NameError::Nul(shown()));
    }
    if path.starts_with('/') {
        return Err(NameError::Absolute(shown()));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(NameError::TooLong(shown()));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        if part.is_empty() {
            return Err(NameError::EmptyComponent(shown()));
        }
        if part == "." || part == ".." {
            return Err(NameError::DotComponent(shown()));
        }
        if part.starts_with("..") {
            return Err(NameError::Reserved(shown()));
        }
        if part.len() > MAX_COMPONENT_BYTES {
            return Err(NameError::ComponentTooLong(shown()));
        }
        parts.push(part);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_nested_paths_pass() {
        assert_eq!(components("password").unwrap(), ["password"]);
        assert_eq!(components("db/url").unwrap(), ["db", "url"]);
        assert_eq!(components(".hidden").unwrap(), [".hidden"]);
        assert_eq!(components("a/.b/c..d").unwrap(), ["a", ".b", "c..d"]);
    }

    #[test]
    fn escapes_and_reserved_names_are_refused() {
        let refused = [
            ("", NameError::Empty(String::new())),
            ("/etc/passwd", NameError::Absolute("/etc/passwd".into())),
            ("../x", NameError::DotComponent("../x".into())),
            ("a/../../x", NameError::DotComponent("a/../../x".into())),
            ("./x", NameError::DotComponent("./x".into())),
            ("a//b", NameError::EmptyComponent("a//b".into())),
            ("a/", NameError::EmptyComponent("a/".into())),
            ("..data", NameError::Reserved("..data".into())),
            ("a/..data_tmp", NameError::Reserved("a/..data_tmp".into())),
            ("a\0b", NameError::Nul("a\0b".into())),
        ];
        for (path, expected) in refused {
            assert_eq!(components(path), Err(expected), "{path:?}");
        }
    }

    #[test]
    fn lengths_are_bounded() {
        let component = "x".repeat(MAX_COMPONENT_BYTES);
        assert!(components(&component).is_ok());
        assert!(matches!(
            components(&format!("{component}x")),
            Err(NameError::ComponentTooLong(_))
        ));
        let long = vec!["abcdefg"; MAX_PATH_BYTES / 8 + 1].join("/");
        assert!(matches!(components(&long), Err(NameError::TooLong(_))));
    }
}
