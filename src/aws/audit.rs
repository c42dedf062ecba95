//! The audit trail: one JSON line per API call, CloudTrail's role. It names the operation, the
//! principal, the resource, the request id and the outcome, and never a value or key material.
//!
//! A file is rotated by size: past [`Rotation::max_bytes`] it becomes `audit.log.1` (the older
//! ones move up to `.2` ... `.N`, the oldest is dropped) and a new file starts, so a flood of
//! calls costs at most `(N + 1) × max_bytes` of disk.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How often buffered lines reach the file at the latest.
const FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// One call.
pub struct AuditEvent {
    pub time: SystemTime,
    pub request_id: String,
    pub operation: String,
    pub principal: Option<String>,
    pub resource: Option<String>,
    pub outcome: &'static str,
    pub error_code: Option<&'static str>,
    pub status: u16,
    pub duration_micros: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditLine<'a> {
    time: String,
    request_id: &'a str,
    operation: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a str>,
    outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'a str>,
    status: u16,
    duration_micros: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyLine<'a> {
    time: String,
    operation: &'a str,
    resource: &'a str,
    outcome: &'a str,
    due: String,
}

/// When a file rotates, and how many rotated files are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

impl Rotation {
    /// 100 MiB a file, five old files.
    pub const DEFAULT: Rotation = Rotation {
        max_bytes: 100 * 1024 * 1024,
        keep: 5,
    };
}

impl Default for Rotation {
    fn default() -> Self {
        Self::DEFAULT
    }
}

struct AuditFile {
    path: PathBuf,
    rotation: Rotation,
    writer: BufWriter<File>,
    /// Bytes in the current file, written or buffered.
    size: u64,
}

impl AuditFile {
    fn open(path: &Path, rotation: Rotation) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            rotation,
            writer: BufWriter::with_capacity(64 * 1024, file),
            size,
        })
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.rotation.max_bytes {
            self.rotate()?;
        }
        self.writer.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `audit.log` → `audit.log.1` → ... → `audit.log.N`, the last one dropped.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.writer.flush()?;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.rotation.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.rotation.keep).rev() {
                if numbered(n).exists() {
                    std::fs::rename(numbered(n), numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        *self = Self::open(&self.path, self.rotation)?;
        Ok(())
    }
}

enum Sink {
    Off,
    Stderr,
    File(Mutex<AuditFile>),
}

/// Where audit lines go. Cloning shares the sink.
#[derive(Clone)]
pub struct AuditSink {
    sink: Arc<Sink>,
}

impl AuditSink {
    pub fn off() -> Self {
        Self {
            sink: Arc::new(Sink::Off),
        }
    }

    pub fn stderr() -> Self {
        Self {
            sink: Arc::new(Sink::Stderr),
        }
    }

    /// Appends to `path` (created with mode 0600), rotated by size. Call
    /// [`AuditSink::spawn_flusher`] from within a runtime so lines reach the file promptly.
    pub fn file(path: &Path, rotation: Rotation) -> std::io::Result<Self> {
        Ok(Self {
            sink: Arc::new(Sink::File(Mutex::new(AuditFile::open(path, rotation)?))),
        })
    }

    /// Parses a sink name: `off`, `stderr`, or a file path.
    pub fn from_setting(setting: &str, rotation: Rotation) -> std::io::Result<Self> {
        match setting {
            "off" | "" => Ok(Self::off()),
            "stderr" | "-" => Ok(Self::stderr()),
            path => Self::file(Path::new(path), rotation),
        }
    }

    pub fn record(&self, event: AuditEvent) {
        if matches!(*self.sink, Sink::Off) {
            return;
        }
        let time = OffsetDateTime::from(event.time)
            .format(&Rfc3339)
            .unwrap_or_default();
        let line = AuditLine {
            time,
            request_id: &event.request_id,
            operation: &event.operation,
            principal: event.principal.as_deref(),
            resource: event.resource.as_deref(),
            outcome: event.outcome,
            error_code: event.error_code,
            status: event.status,
            duration_micros: event.duration_micros,
        };
        self.write(&line);
    }

    /// A parameter policy that fell due: no caller and no request, so a line of its own, with
    /// the event's type as the operation and the parameter's ARN as the resource.
    pub fn record_policy(&self, time: SystemTime, event_type: &str, resource: &str, due: i64) {
        if matches!(*self.sink, Sink::Off) {
            return;
        }
        let format = |time: OffsetDateTime| time.format(&Rfc3339).unwrap_or_default();
        let line = PolicyLine {
            time: format(OffsetDateTime::from(time)),
            operation: event_type,
            resource,
            outcome: "fired",
            due: OffsetDateTime::from_unix_timestamp(due)
                .map(format)
                .unwrap_or_default(),
        };
        self.write(&line);
    }

    fn write(&self, line: &impl Serialize) {
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        text.push('\n');
        match &*self.sink {
            Sink::Off => {}
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(text.as_bytes());
            }
            Sink::File(file) => {
                if let Ok(mut file) = file.lock()
                    && let Err(error) = file.write(text.as_bytes())
                {
                    tracing::error!(%error, "writing the audit log failed");
                }
            }
        }
    }

    pub fn flush(&self) {
        if let Sink::File(file) = &*self.sink
            && let Ok(mut file) = file.lock()
        {
            let _ = file.writer.flush();
        }
    }

    /// Flushes buffered lines every [`FLUSH_INTERVAL`] until the runtime stops.
    pub fn spawn_flusher(&self) {
        if !matches!(*self.sink, Sink::File(_)) {
            return;
        }
        let sink = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(FLUSH_INTERVAL);
            loop {
                interval.tick().await;
                sink.flush();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_lines_name_the_event_and_the_parameter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let sink = AuditSink::file(&path, Rotation::DEFAULT).unwrap();
        sink.record_policy(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            "dev.coffer.parameter.expired",
            "arn:aws:ssm:us-east-1:123456789012:parameter/a",
            1_800_000_000,
        );
        sink.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["operation"], "dev.coffer.parameter.expired");
        assert_eq!(
            line["resource"],
            "arn:aws:ssm:us-east-1:123456789012:parameter/a"
        );
        assert_eq!(line["outcome"], "fired");
        assert_eq!(line["due"], "2027-01-15T08:00:00Z");
    }

    #[test]
    fn lines_are_json_with_the_call_facts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let sink = AuditSink::file(&path, Rotation::DEFAULT).unwrap();
        sink.record(AuditEvent {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            request_id: "req-1".into(),
            operation: "TrentService.Decrypt".into(),
            principal: Some("arn:aws:iam::123456789012:user/admin".into()),
            resource: Some("arn:aws:kms:us-east-1:123456789012:key/k".into()),
            outcome: "error",
            error_code: Some("InvalidCiphertextException"),
            status: 400,
            duration_micros: 42,
        });
        sink.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["time"], "2027-01-15T08:00:00Z");
        assert_eq!(line["requestId"], "req-1");
        assert_eq!(line["operation"], "TrentService.Decrypt");
        assert_eq!(line["errorCode"], "InvalidCiphertextException");
        assert_eq!(line["outcome"], "error");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    fn event(operation: &str) -> AuditEvent {
        AuditEvent {
            time: SystemTime::UNIX_EPOCH,
            request_id: "r".into(),
            operation: operation.into(),
            principal: None,
            resource: None,
            outcome: "error",
            error_code: Some("UnknownOperationException"),
            status: 400,
            duration_micros: 1,
        }
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_n_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotation = Rotation {
            max_bytes: 1000,
            keep: 2,
        };
        let sink = AuditSink::file(&path, rotation).unwrap();
        for n in 0..200 {
            sink.record(event(&format!("op-{n}")));
        }
        sink.flush();
        let size = |name: &str| std::fs::metadata(dir.path().join(name)).map(|m| m.len());
        assert!(size("audit.log").unwrap() <= 1000);
        assert!(size("audit.log.1").unwrap() <= 1000);
        assert!(size("audit.log.2").unwrap() <= 1000);
        assert!(size("audit.log.3").is_err(), "only two old files are kept");
        // The newest line is in the current file, and every file is mode 0600.
        assert!(std::fs::read_to_string(&path).unwrap().contains("op-199"));
        use std::os::unix::fs::PermissionsExt as _;
        for name in ["audit.log", "audit.log.1", "audit.log.2"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }
}
