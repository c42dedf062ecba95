//! The AWS JSON 1.1 encoding every service shares: request bodies parsed straight into input
//! shapes, AWS's error names for shapes that do not fit, base64 blobs, epoch timestamps, and
//! output shapes written without a JSON tree.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

use super::AwsError;
use crate::crypto::SecretBytes;

/// A response body that wipes its bytes once the connection has written and dropped them:
/// bodies carry plaintexts and data keys (in base64), and freed memory is not cleared.
pub fn wiped_body(bytes: Vec<u8>) -> axum::body::Body {
    axum::body::Body::from(bytes::Bytes::from_owner(WipedOnDrop(BodyBuffer(bytes))))
}

/// A request body, once read, held so that it is wiped when dropped. The collected bytes are
/// taken over without a copy when nothing else shares them.
pub fn wiped_request(bytes: bytes::Bytes) -> SecretBytes {
    SecretBytes::new(Vec::from(bytes))
}

/// A body's bytes, wiped in bulk ([`crate::crypto::wipe`]).
struct BodyBuffer(Vec<u8>);

impl AsRef<[u8]> for BodyBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl zeroize::Zeroize for BodyBuffer {
    fn zeroize(&mut self) {
        crate::crypto::wipe(&mut self.0);
    }
}

/// Owns a buffer and zeroizes it on drop.
struct WipedOnDrop<T: zeroize::Zeroize + AsRef<[u8]>>(T);

impl<T: zeroize::Zeroize + AsRef<[u8]>> AsRef<[u8]> for WipedOnDrop<T> {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref()
    }
}

impl<T: zeroize::Zeroize + AsRef<[u8]>> Drop for WipedOnDrop<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A request body parsed into its input shape. An empty body is `{}`; anything but a JSON
/// object is a SerializationException; an absent required member a ValidationException.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, AwsError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    if body.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return Err(AwsError::client(
            "SerializationException",
            "The request body must be a JSON object.",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = T::deserialize(&mut deserializer).map_err(|err| input_error(&err))?;
    deserializer.end().map_err(|_| {
        AwsError::client(
            "SerializationException",
            "The request body is not valid JSON.",
        )
    })?;
    Ok(parsed)
}

/// An output shape as a response body.
pub fn encode<T: Serialize>(output: &T) -> Result<Vec<u8>, AwsError> {
    serde_json::to_vec(output).map_err(|_| AwsError::fault("InternalFailure"))
}

/// What an operation's output becomes on the wire. Every `Serialize` output is written by
/// serde; the hot path's outputs (a large blob and a few strings) write themselves, because
/// base64 needs no JSON escaping and, at 4 KiB, scanning it for escapes costs more than the
/// rest of the encoding.
pub trait WireOutput {
    fn to_body(&self) -> Result<Vec<u8>, AwsError>;
}

impl<T: Serialize> WireOutput for T {
    fn to_body(&self) -> Result<Vec<u8>, AwsError> {
        encode(self)
    }
}

/// `{"<blob_field>":"<base64>", "<name>":<JSON string>, ...}` written directly: the base64
/// alphabet needs no escaping; the other values are escaped as JSON strings.
pub fn blob_body(
    blob_field: &str,
    blob: &[u8],
    fields: &[(&str, &str)],
) -> Result<Vec<u8>, AwsError> {
    let mut out = String::with_capacity(blob.len() * 4 / 3 + 256);
    out.push_str("{\"");
    out.push_str(blob_field);
    out.push_str("\":\"");
    STANDARD.encode_string(blob, &mut out);
    out.push('"');
    for (name, value) in fields {
        out.push_str(",\"");
        out.push_str(name);
        out.push_str("\":");
        out.push_str(
            &serde_json::to_string(value).map_err(|_| AwsError::fault("InternalFailure"))?,
        );
    }
    out.push('}');
    Ok(out.into_bytes())
}

/// The AWS error for an input that does not fit its shape.
pub fn input_error(err: &serde_json::Error) -> AwsError {
    // serde's message names the field and the expected type, never the value.
    let message = err.to_string();
    match missing_member(&message) {
        // AWS reports an absent required member as a validation error, not a parse error.
        Some(member) => AwsError::client(
            "ValidationException",
            format!(
                "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
            ),
        ),
        None => AwsError::client(
            "SerializationException",
            format!("Invalid request: {message}"),
        ),
    }
}

/// The member named by serde's "missing field `Name`" message, in AWS's camelCase.
fn missing_member(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    let name = rest.get(..rest.find('`')?)?;
    let mut chars = name.chars();
    let first = chars.next()?;
    Some(first.to_ascii_lowercase().to_string() + chars.as_str())
}

/// An input blob: standard base64 with padding on the wire.
pub struct Blob(pub Vec<u8>);

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Any, not str: for a non-string, `deserialize_str` writes its own message, quoting it.
        deserializer.deserialize_any(StringOnly(|text: &str| {
            STANDARD
                .decode(text.as_bytes())
                .map(Blob)
                .map_err(|_| "blob is not valid base64")
        }))
    }
}

/// A visitor that takes a JSON string and nothing else, and whose errors never quote what was
/// sent in its place: serde's own "invalid type" message would echo a number or a boolean, and
/// these members hold plaintexts and secrets.
pub struct StringOnly<F>(pub F);

/// A member that is secret text (a SecretString, a parameter's Value): a JSON string held as
/// secret bytes from the moment it is read, whose errors never quote what was sent instead.
pub struct SecretText(pub SecretBytes);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StringOnly(|text: &str| {
            Ok(SecretText(SecretBytes::from_slice(text.as_bytes())))
        }))
    }
}

impl<T, F: FnOnce(&str) -> Result<T, &'static str>> serde::de::Visitor<'_> for StringOnly<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        (self.0)(text).map_err(E::custom)
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<T, E> {
        Err(E::custom("expected a string"))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<T, E> {
        Err(E::custom("expected a string"))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<T, E> {
        Err(E::custom("expected a string"))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<T, E> {
        Err(E::custom("expected a string"))
    }
}

/// An input blob that is secret (a plaintext): zeroized when dropped.
pub struct SecretBlob(pub SecretBytes);

impl<'de> Deserialize<'de> for SecretBlob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Blob(bytes) = Blob::deserialize(deserializer)?;
        Ok(SecretBlob(SecretBytes::new(bytes)))
    }
}

/// Writes bytes as a base64 string field (`#[serde(serialize_with = "wire::base64")]`).
pub fn base64<S: Serializer, B: AsRef<[u8]>>(bytes: B, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&Base64Display(bytes.as_ref()))
}

/// Writes a secret as a base64 string field: the only place its bytes are read for output.
pub fn secret_base64<S: Serializer>(
    secret: &SecretBytes,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&Base64Display(secret.expose()))
}

/// Writes an optional secret as a base64 string field.
pub fn optional_secret_base64<S: Serializer>(
    secret: &Option<SecretBytes>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => secret_base64(secret, serializer),
        None => serializer.serialize_none(),
    }
}

/// Base64 written in chunks straight into the output, without a whole encoded copy.
struct Base64Display<'a>(&'a [u8]);

impl fmt::Display for Base64Display<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 3 input bytes make 4 characters: whole groups per chunk keep the padding at the end.
        let mut buffer = [0u8; 4096];
        for chunk in self.0.chunks(3072) {
            let written = STANDARD
                .encode_slice(chunk, &mut buffer)
                .map_err(|_| fmt::Error)?;
            let text = buffer
                .get(..written)
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .ok_or(fmt::Error)?;
            f.write_str(text)?;
        }
        Ok(())
    }
}

/// The output of an operation that answers nothing: `{}`.
#[derive(Serialize)]
pub struct Empty {}

/// Whole seconds from an AWS timestamp (a JSON number, possibly fractional).
pub fn timestamp(seconds: f64, member: &str) -> Result<i64, AwsError> {
    crate::engine::whole_seconds(seconds).ok_or_else(|| {
        AwsError::client(
            "ValidationException",
            format!("{member} is not a valid timestamp."),
        )
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_secret_of_the_wrong_type_is_not_quoted_back() {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        #[allow(dead_code)]
        struct Input {
            plaintext: SecretBlob,
        }
        for body in [
            r#"{"Plaintext": 987654321987}"#,
            r#"{"Plaintext": -987654321987}"#,
            r#"{"Plaintext": 9876.54321987}"#,
            r#"{"Plaintext": true}"#,
        ] {
            let err = super::decode::<Input>(body.as_bytes()).err().unwrap();
            assert_eq!(err.code, "SerializationException");
            assert!(!err.message.contains("987654321987"), "{}", err.message);
            assert!(!err.message.contains("true"), "{}", err.message);
        }
        let ok = super::decode::<Input>(br#"{"Plaintext": "aGk="}"#)
            .ok()
            .unwrap();
        assert_eq!(ok.plaintext.0.expose(), b"hi");
    }

    /// A buffer that reports being zeroized.
    struct Probe {
        bytes: Vec<u8>,
        wiped: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl AsRef<[u8]> for Probe {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }

    impl zeroize::Zeroize for Probe {
        fn zeroize(&mut self) {
            self.bytes.zeroize();
            self.wiped.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn response_bodies_are_wiped_once_written() {
        use http_body_util::BodyExt as _;
        let wiped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let owner = WipedOnDrop(Probe {
            bytes: br#"{"Plaintext":"c2VjcmV0"}"#.to_vec(),
            wiped: wiped.clone(),
        });
        let body = axum::body::Body::from(bytes::Bytes::from_owner(owner));
        let written = body.collect().await.unwrap().to_bytes();
        assert_eq!(&written[..], br#"{"Plaintext":"c2VjcmV0"}"#);
        assert!(
            !wiped.load(std::sync::atomic::Ordering::SeqCst),
            "still in use"
        );
        drop(written);
        assert!(wiped.load(std::sync::atomic::Ordering::SeqCst));
        // What the front end sends goes the same way, whole.
        let sent = wiped_body(b"{}".to_vec())
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&sent[..], b"{}");
    }

    #[test]
    fn a_collected_request_body_is_taken_over_without_a_copy() {
        let collected = bytes::Bytes::from(b"{\"Plaintext\":\"c2VjcmV0\"}".to_vec());
        let at = collected.as_ptr();
        let held = wiped_request(collected);
        assert_eq!(
            held.expose().as_ptr(),
            at,
            "the same allocation, so no unwiped copy is left"
        );
    }

    use serde_json::json;

    use super::*;

    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    #[allow(dead_code)]
    struct Input {
        key_id: String,
        blob: Option<Blob>,
    }

    #[test]
    fn absent_members_are_validation_errors_and_bad_types_serialization_errors() {
        let Err(missing) = decode::<Input>(b"{}") else {
            panic!("an empty object must be refused")
        };
        assert_eq!(missing.code, "ValidationException");
        assert!(
            missing.message.contains("Value null at 'keyId'"),
            "{}",
            missing.message
        );
        let Err(wrong_type) = decode::<Input>(br#"{"KeyId": 7}"#) else {
            panic!("a number KeyId must be refused")
        };
        assert_eq!(wrong_type.code, "SerializationException");
        let Err(bad_blob) = decode::<Input>(br#"{"KeyId": "k", "Blob": "@@"}"#) else {
            panic!("a bad blob must be refused")
        };
        assert_eq!(bad_blob.code, "SerializationException");
        for bad in [&b"[]"[..], b"\"x\"", br#"{"KeyId": "k"} {}"#, b"{"] {
            let Err(error) = decode::<Input>(bad) else {
                panic!("{bad:?} must be refused")
            };
            assert_eq!(error.code, "SerializationException");
        }
    }

    #[test]
    fn blobs_round_trip_through_base64_at_every_length() {
        #[derive(Serialize)]
        struct Output<'a> {
            #[serde(serialize_with = "base64")]
            blob: &'a [u8],
        }
        for len in [0, 1, 2, 3, 4, 3071, 3072, 3073, 10_000] {
            let bytes: Vec<u8> = (0..len)
                .map(|n| u8::try_from(n * 7 % 256).unwrap())
                .collect();
            let body = encode(&Output { blob: &bytes }).unwrap();
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(parsed, json!({"blob": STANDARD.encode(&bytes)}), "{len}");
        }
    }

    #[test]
    fn blob_bodies_are_valid_json() {
        let body = blob_body(
            "CiphertextBlob",
            &[0u8, 255, 7, 250, 1],
            &[
                ("KeyId", "arn:aws:kms:r:1:key/\"x\\"),
                ("EncryptionAlgorithm", "SYMMETRIC_DEFAULT"),
            ],
        )
        .unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            json!({
                "CiphertextBlob": STANDARD.encode([0u8, 255, 7, 250, 1]),
                "KeyId": "arn:aws:kms:r:1:key/\"x\\",
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            })
        );
    }

    #[test]
    fn timestamps_must_be_finite_and_in_range() {
        assert_eq!(
            timestamp(1_700_000_000.9, "ValidTo").unwrap(),
            1_700_000_000
        );
        assert_eq!(timestamp(-1.5, "ValidTo").unwrap(), -2);
        for bad in [f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(
                timestamp(bad, "ValidTo").unwrap_err().code,
                "ValidationException"
            );
        }
    }
}
