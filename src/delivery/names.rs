//! File names inside a volume.
//!
//! A name comes from a volume's author, or from a parameter's name under a path, so it is
//! untrusted: the Secrets Store CSI Driver's CVE-2020-8567 was an object name with `..` writing
//! onto the host. Every name is checked here before it becomes a [`super::VolumeFile`], and the
//! writer checks it again.

use std::collections::BTreeSet;

/// Longest name of one component (NAME_MAX on Linux).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Longest relative path (PATH_MAX on Linux).
pub const MAX_PATH_BYTES: usize = 4096;

/// Why a file name or a set of names is refused. Names are paths chosen by the volume's author,
/// not values, so they may be quoted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("file name is empty")]
    Empty,
    #[error("file {0:?} must be relative (no leading '/')")]
    Absolute(String),
    #[error("file {0:?} has an empty component, '.' or '..'")]
    BadComponent(String),
    #[error(
        "file {0:?} has a component starting with '..', which the volume's own layout reserves"
    )]
    Reserved(String),
    #[error("file {0:?} holds a NUL or a backslash")]
    BadCharacter(String),
    #[error("file {0:?} has a component longer than {MAX_COMPONENT_BYTES} bytes")]
    ComponentTooLong(String),
    #[error("file {0:?} is longer than {MAX_PATH_BYTES} bytes")]
    TooLong(String),
    #[error("file {0:?} is named twice in the volume")]
    Duplicate(String),
    #[error("file {file:?} is also the directory of {other:?}")]
    FileIsDirectory { file: String, other: String },
}

/// Checks one relative, `/`-separated file name.
pub fn check(path: &str) -> Result<(), NameError> {
    components(path).map(|_| ())
}

/// The components of `path` when it is a safe relative file name inside a volume. The CSI
/// writer asks again right before it touches the disk.
pub fn components(path: &str) -> Result<Vec<&str>, NameError> {
    if path.is_empty() {
        return Err(NameError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(NameError::TooLong(shorten(path)));
    }
    if path.contains(['\0', '\\']) {
        return Err(NameError::BadCharacter(shorten(path)));
    }
    if path.starts_with('/') {
        return Err(NameError::Absolute(shorten(path)));
    }
    if path.starts_with("..") {
        return Err(NameError::Reserved(shorten(path)));
    }
    let mut parts = Vec::new();
    for component in path.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return Err(NameError::BadComponent(shorten(path)));
        }
        // `..data`, `..data_tmp` and the timestamped directories live in every directory of
        // the writer's layout.
        if component.starts_with("..") {
            return Err(NameError::Reserved(shorten(path)));
        }
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(NameError::ComponentTooLong(shorten(path)));
        }
        parts.push(component);
    }
    Ok(parts)
}

/// Checks that names can all be files of one volume: each valid, none twice, and none the
/// directory of another.
pub fn check_all<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<(), NameError> {
    let mut files = BTreeSet::new();
    for path in paths {
        check(path)?;
        if !files.insert(path) {
            return Err(NameError::Duplicate(path.to_owned()));
        }
    }
    for path in &files {
        for (slash, _) in path.match_indices('/') {
            if let Some(directory) = path.get(..slash)
                && files.contains(directory)
            {
                return Err(NameError::FileIsDirectory {
                    file: directory.to_owned(),
                    other: (*path).to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// `relative` inside the directory `directory` (which may be empty: the volume's root).
pub fn join(directory: &str, relative: &str) -> String {
    let directory = directory.trim_end_matches('/');
    if directory.is_empty() {
        relative.to_owned()
    } else {
        format!("{directory}/{relative}")
    }
}

/// A long name cut for an error message.
fn shorten(path: &str) -> String {
    if path.len() <= 120 {
        return path.to_owned();
    }
    let mut end = 64;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", path.get(..end).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_gets_components_and_every_reserved_or_escaping_name_is_refused() {
        assert_eq!(components("db/url").unwrap(), ["db", "url"]);
        assert_eq!(components("a/.b/c..d").unwrap(), ["a", ".b", "c..d"]);
        for path in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "./x",
            "a//b",
            "a/",
            "..data",
            "a/..data_tmp",
            "a\0b",
            "a\\b",
        ] {
            assert!(components(path).is_err(), "{path:?}");
        }
        assert_eq!(
            components("a/..data_tmp"),
            Err(NameError::Reserved("a/..data_tmp".into()))
        );
    }
    use proptest::prelude::*;

    #[test]
    fn accepts_plain_relative_names() {
        for ok in [
            "password",
            "db/password",
            "a.b/c-d_e",
            ".hidden",
            "a/.b",
            "x..y",
            "a/b..c",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_escapes_and_odd_names() {
        assert_eq!(check(""), Err(NameError::Empty));
        assert!(matches!(check("/etc/passwd"), Err(NameError::Absolute(_))));
        for bad in ["a/../b", "a/..", "a//b", "a/", "./a", "a/./b", "."] {
            assert!(
                matches!(check(bad), Err(NameError::BadComponent(_))),
                "{bad}"
            );
        }
        for bad in ["..", "../x", "..data", "..2026_01_01"] {
            assert!(matches!(check(bad), Err(NameError::Reserved(_))), "{bad}");
        }
        assert!(matches!(check("a\0b"), Err(NameError::BadCharacter(_))));
        assert!(matches!(check("a\\..\\b"), Err(NameError::BadCharacter(_))));
        let long_component = "x".repeat(256);
        assert!(matches!(
            check(&long_component),
            Err(NameError::ComponentTooLong(_))
        ));
        assert_eq!(check(&"x".repeat(255)), Ok(()));
        let long_path = vec!["y".repeat(200); 21].join("/");
        assert!(matches!(check(&long_path), Err(NameError::TooLong(_))));
    }

    #[test]
    fn a_volume_names_each_file_once_and_no_file_as_a_directory() {
        assert_eq!(check_all(["a", "b/c", "b/d", "bc"]), Ok(()));
        assert_eq!(check_all(["a", "a"]), Err(NameError::Duplicate("a".into())));
        assert_eq!(
            check_all(["b/c/d", "b/c"]),
            Err(NameError::FileIsDirectory {
                file: "b/c".into(),
                other: "b/c/d".into()
            })
        );
        assert!(check_all(["b", "b/c"]).is_err());
    }

    #[test]
    fn join_puts_a_name_under_a_directory() {
        assert_eq!(join("", "a/b"), "a/b");
        assert_eq!(join("conf/", "a"), "conf/a");
        assert_eq!(join("conf", "a"), "conf/a");
    }

    proptest! {
        /// Whatever the name, an accepted one stays inside the volume: joined under a root it
        /// never climbs out, is never absolute, and is never the writer's `..` layout.
        #[test]
        fn accepted_names_stay_inside_the_volume(path in "[a-z./\\\\\\x00]{0,12}") {
            if check(&path).is_ok() {
                let joined = std::path::Path::new("/volume").join(&path);
                let mut depth = 0i32;
                for component in joined.strip_prefix("/volume").unwrap().components() {
                    match component {
                        std::path::Component::Normal(_) => depth += 1,
                        other => prop_assert!(false, "{path:?} has {other:?}"),
                    }
                }
                prop_assert!(depth >= 1);
                prop_assert!(!path.starts_with(".."));
                prop_assert!(!path.contains('\\') && !path.contains('\0'));
            }
        }

        /// Names built from good components are accepted; one bad component spoils any name.
        #[test]
        fn one_bad_component_spoils_a_name(
            good in proptest::collection::vec("[a-z][a-z0-9._-]{0,10}", 1..5),
            bad in prop_oneof![Just(""), Just("."), Just("..")],
            at in 0usize..5,
        ) {
            prop_assert_eq!(check(&good.join("/")), Ok(()));
            let mut spoilt = good.clone();
            spoilt.insert(at.min(good.len()), bad.to_owned());
            prop_assert!(check(&spoilt.join("/")).is_err());
        }

        /// check_all refuses exactly the sets with a duplicate or a file under another file.
        #[test]
        fn check_all_matches_a_plain_definition(
            names in proptest::collection::vec("[ab](/[ab]){0,2}", 0..5),
        ) {
            let mut clash = false;
            for (i, x) in names.iter().enumerate() {
                for (j, y) in names.iter().enumerate() {
                    if i != j && (x == y || y.starts_with(&format!("{x}/"))) {
                        clash = true;
                    }
                }
            }
            prop_assert_eq!(check_all(names.iter().map(String::as_str)).is_err(), clash);
        }
    }
}
