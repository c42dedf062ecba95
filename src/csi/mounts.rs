//! tmpfs mounts, and which paths are mount points (read from `/proc/self/mountinfo`).

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt as _;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

const MOUNTINFO: &str = "/proc/self/mountinfo";

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot read {MOUNTINFO}: {0}")]
    MountInfo(#[source] std::io::Error),
    #[error("cannot mount a tmpfs at {path}: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot unmount {path}: {source}")]
    Unmount {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One line of mountinfo: where something is mounted, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// The entries of a mountinfo text (proc(5)); lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

// ID PARENT MAJOR:MINOR ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS
fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let mount_point = fields.nth(4)?;
    let mut fields = fields.skip_while(|field| *field != "-");
    fields.next()?;
    let fs_type = fields.next()?;
    Some(MountEntry {
        mount_point: PathBuf::from(OsString::from_vec(unescape(mount_point))),
        fs_type: String::from_utf8(unescape(fs_type)).ok()?,
    })
}

/// The kernel writes space, tab, newline and backslash in paths as `\` and three octal digits.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(value) = u8::try_from(value) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(byte);
        i += 1;
    }
    out
}

/// The mounts stacked at `path` in this process's mount namespace, oldest first. `path` is
/// resolved first (mountinfo names real paths); a path that does not exist has none.
pub fn mounts_at(path: &Path) -> Result<Vec<MountEntry>, MountError> {
    let real = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(MountError::MountInfo(err)),
    };
    let text = std::fs::read_to_string(MOUNTINFO).map_err(MountError::MountInfo)?;
    Ok(parse_mountinfo(&text)
        .into_iter()
        .filter(|entry| entry.mount_point == real)
        .collect())
}

/// Whether the topmost mount at `path` is a tmpfs.
pub fn is_tmpfs_mount_point(path: &Path) -> Result<bool, MountError> {
    Ok(mounts_at(path)?
        .last()
        .is_some_and(|entry| entry.fs_type == "tmpfs"))
}

/// Mounts a fresh tmpfs of at most `size_bytes` at `target`: no devices, no set-id, no
/// executables. Its root has mode 0755, or 0750 owned by group `group` when given.
pub fn mount_tmpfs(target: &Path, size_bytes: u64, group: Option<u32>) -> Result<(), MountError> {
    let mut options = format!("size={size_bytes}");
    match group {
        Some(gid) => options.push_str(&format!(",mode=0750,gid={gid}")),
        None => options.push_str(",mode=0755"),
    }
    let failed = |source| MountError::Mount {
        path: target.to_owned(),
        source,
    };
    let options =
        CString::new(options).map_err(|_| failed(std::io::ErrorKind::InvalidInput.into()))?;
    rustix::mount::mount(
        "coffer",
        target,
        "tmpfs",
        MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOEXEC,
        options.as_c_str(),
    )
    .map_err(|errno| failed(errno.into()))
}

/// Unmounts whatever is mounted at `target`, once.
pub fn unmount(target: &Path) -> Result<(), MountError> {
    rustix::mount::unmount(target, UnmountFlags::NOFOLLOW).map_err(|errno| MountError::Unmount {
        path: target.to_owned(),
        source: errno.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_mount_points_and_types() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
42 22 0:39 / /var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/v/mount rw,nosuid,nodev,noexec shared:7 master:2 - tmpfs coffer rw,size=4096k
43 22 0:40 / /tmp/with\\040space\\011tab\\134back rw - tmpfs tmpfs rw
malformed line
44 22 0:41 / /no/separator rw tmpfs
";
        let entries = parse_mountinfo(text);
        assert_eq!(
            entries,
            [
                MountEntry {
                    mount_point: "/".into(),
                    fs_type: "ext4".into()
                },
                MountEntry {
                    mount_point: "/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/v/mount".into(),
                    fs_type: "tmpfs".into()
                },
                MountEntry {
                    mount_point: "/tmp/with space\ttab\\back".into(),
                    fs_type: "tmpfs".into()
                },
            ]
        );
    }

    #[test]
    fn only_well_formed_escapes_are_decoded() {
        assert_eq!(unescape("a\\040b"), b"a b");
        assert_eq!(unescape("a\\04"), b"a\\04");
        assert_eq!(unescape("a\\9zzb"), b"a\\9zzb");
        assert_eq!(unescape("\\777"), b"\\777");
        assert_eq!(unescape("x\\"), b"x\\");
    }

    #[test]
    fn a_missing_path_has_no_mounts() {
        assert!(
            mounts_at(Path::new("/nonexistent/coffer/path"))
                .unwrap()
                .is_empty()
        );
        assert!(!is_tmpfs_mount_point(Path::new("/nonexistent/coffer/path")).unwrap());
    }
}
