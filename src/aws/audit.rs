//! The audit trail: one JSON line per API call, CloudTrail's role. It names the operation, the
//! principal, the resource, the request id and the outcome, and never a value or key material.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
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

enum Sink {
    Off,
    Stderr,
    File(Mutex<BufWriter<File>>),
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

    /// Appends to `path` (created with mode 0600). Call [`AuditSink::spawn_flusher`] from within
    /// a runtime so lines reach the file promptly.
    pub fn file(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Self {
            sink: Arc::new(Sink::File(Mutex::new(BufWriter::with_capacity(
                64 * 1024,
                file,
            )))),
        })
    }

    /// Parses a sink name: `off`, `stderr`, or a file path.
    pub fn from_setting(setting: &str) -> std::io::Result<Self> {
        match setting {
            "off" | "" => Ok(Self::off()),
            "stderr" | "-" => Ok(Self::stderr()),
            path => Self::file(Path::new(path)),
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
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        match &*self.sink {
            Sink::Off => {}
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(text.as_bytes());
            }
            Sink::File(writer) => {
                if let Ok(mut writer) = writer.lock()
                    && writer.write_all(text.as_bytes()).is_err()
                {
                    tracing::error!("writing the audit log failed");
                }
            }
        }
    }

    pub fn flush(&self) {
        if let Sink::File(writer) = &*self.sink
            && let Ok(mut writer) = writer.lock()
        {
            let _ = writer.flush();
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
    fn lines_are_json_with_the_call_facts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let sink = AuditSink::file(&path).unwrap();
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
}
