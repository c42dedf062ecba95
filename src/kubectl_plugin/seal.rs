//! `seal` and `public-key`: sealed values (docs/sealed-values.md) for Secret and Parameter
//! manifests, made with [`crate::crypto::sealed::seal`].

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube::Api;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::PluginError;
use super::cli::{KubeArgs, PublicKeyArgs, SealArgs, SealKind};
use super::kube_context::KubeContext;
use crate::crypto::asymmetric::KeySpec;
use crate::crypto::sealed::{self, MAX_PLAINTEXT_LEN, SealTarget};
use crate::resources::kmskey::{KeyState, KeyUsage, KmsKey};

/// The API version of the custom resources written.
pub const API_VERSION: &str = "coffer.dev/v1alpha1";
/// `apiVersion` of a saved public key file.
pub const KEY_FILE_API_VERSION: &str = "coffer.dev/sealing-key/v1";
/// `kind` of a saved public key file.
pub const KEY_FILE_KIND: &str = "SealingKey";

/// What sealing needs of a KmsKey: its id, spec and public key, and where it lives. This is
/// also the file `public-key` writes (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SealingKey {
    pub api_version: String,
    pub kind: String,
    /// The KmsKey's namespace: a sealed value opens only with a key of its own namespace.
    pub namespace: String,
    /// The KmsKey's name (for people; sealing uses the key id).
    pub name: String,
    /// `status.keyId`.
    pub key_id: String,
    /// `RSA_2048`, `RSA_3072` or `RSA_4096`.
    pub key_spec: String,
    /// `status.publicKey`: DER SubjectPublicKeyInfo in base64.
    pub public_key: String,
}

impl SealingKey {
    /// The key of KmsKey `obj`, refused unless it can seal (RSA, ENCRYPT_DECRYPT, with a public
    /// key and key id in its status).
    pub fn from_kmskey(obj: &KmsKey, namespace: &str, name: &str) -> Result<Self, PluginError> {
        let unusable = |reason: &str| PluginError::KeyUnusable {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        if obj.spec.key_usage != KeyUsage::EncryptDecrypt {
            return Err(unusable("its keyUsage is not ENCRYPT_DECRYPT"));
        }
        let status = obj
            .status
            .as_ref()
            .ok_or_else(|| unusable("it has no status yet (is the controller running?)"))?;
        match status.key_state {
            Some(KeyState::PendingDeletion) => {
                return Err(unusable(
                    "it is pending deletion: nothing sealed to it would open after the window",
                ));
            }
            Some(KeyState::Disabled) => eprintln!(
                "warning: KmsKey {namespace}/{name} is disabled: the sealed value opens only once it is enabled"
            ),
            _ => {}
        }
        let key_spec = serde_json::to_value(status.key_spec.unwrap_or(obj.spec.key_spec))
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        let key = Self {
            api_version: KEY_FILE_API_VERSION.to_owned(),
            kind: KEY_FILE_KIND.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key_id: status
                .key_id
                .clone()
                .ok_or_else(|| unusable("its status has no keyId yet"))?,
            key_spec,
            public_key: status
                .public_key
                .clone()
                .ok_or_else(|| unusable("its status has no publicKey (only RSA keys can seal)"))?,
        };
        key.spec().map_err(|reason| unusable(&reason)).map(|_| key)
    }

    /// Reads and checks a saved key file.
    pub fn from_file(path: &Path) -> Result<Self, PluginError> {
        let text = std::fs::read(path).map_err(PluginError::file(path))?;
        let bad = |reason: String| PluginError::KeyFile {
            path: path.to_owned(),
            reason,
        };
        let key: Self = serde_json::from_slice(&text).map_err(|err| {
            bad(format!(
                "not a key file written by `kubectl coffer public-key`: {err}"
            ))
        })?;
        if key.api_version != KEY_FILE_API_VERSION || key.kind != KEY_FILE_KIND {
            return Err(bad(format!(
                "apiVersion/kind must be {KEY_FILE_API_VERSION}/{KEY_FILE_KIND}"
            )));
        }
        key.spec().map_err(bad)?;
        Ok(key)
    }

    /// The key spec, which must be RSA, with a public key that decodes.
    fn spec(&self) -> Result<KeySpec, String> {
        let spec = KeySpec::from_str(&self.key_spec)
            .ok()
            .filter(|spec| spec.is_rsa())
            .ok_or_else(|| {
                format!(
                    "keySpec {:?} is not RSA_2048, RSA_3072 or RSA_4096",
                    self.key_spec
                )
            })?;
        self.public_key_der()?;
        Ok(spec)
    }

    fn public_key_der(&self) -> Result<Vec<u8>, String> {
        STANDARD
            .decode(self.public_key.trim())
            .map_err(|_| "publicKey is not base64".to_owned())
    }

    /// Seals `plaintext` for `namespace`/`name` (the resource's), as `spec.sealedValue` text.
    pub fn seal(
        &self,
        namespace: &str,
        name: &str,
        plaintext: &[u8],
    ) -> Result<String, PluginError> {
        if self.namespace != namespace {
            return Err(PluginError::KeyNamespace {
                key_namespace: self.namespace.clone(),
                target_namespace: namespace.to_owned(),
            });
        }
        let spec = self.spec().map_err(PluginError::Usage)?;
        let der = self.public_key_der().map_err(PluginError::Usage)?;
        let target = SealTarget {
            namespace,
            resource_name: name,
        };
        let blob = sealed::seal(&der, spec, &self.key_id, &target, plaintext)?;
        Ok(STANDARD.encode(blob))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a, S> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata<'a>,
    spec: S,
}

#[derive(Serialize)]
struct Metadata<'a> {
    name: &'a str,
    namespace: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretSpec<'a> {
    sealed_value: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ParameterSpec<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    type_: &'static str,
    sealed_value: &'a str,
}

/// The YAML manifest of a Secret, or SecureString Parameter named `parameter_name`, holding
/// `sealed_value`.
pub fn render_manifest(
    kind: SealKind,
    namespace: &str,
    name: &str,
    parameter_name: Option<&str>,
    sealed_value: &str,
) -> Result<String, PluginError> {
    let metadata = Metadata { name, namespace };
    let rendered = match kind {
        SealKind::Secret => serde_yaml::to_string(&Manifest {
            api_version: API_VERSION,
            kind: "Secret",
            metadata,
            spec: SecretSpec { sealed_value },
        }),
        SealKind::Parameter => serde_yaml::to_string(&Manifest {
            api_version: API_VERSION,
            kind: "Parameter",
            metadata,
            spec: ParameterSpec {
                name: parameter_name.unwrap_or(name),
                type_: "SecureString",
                sealed_value,
            },
        }),
    };
    rendered.map_err(|_| PluginError::Internal("the manifest could not be rendered"))
}

/// `kubectl coffer seal`.
pub async fn run_seal(kube: &KubeArgs, args: SealArgs) -> Result<ExitCode, PluginError> {
    if args.kind == SealKind::Secret && args.parameter_name.is_some() {
        return Err(PluginError::Usage(
            "--parameter-name applies to --kind parameter only".to_owned(),
        ));
    }
    let (key, namespace) = match (&args.key, &args.public_key_file) {
        (_, Some(path)) => {
            let key = SealingKey::from_file(path)?;
            // Offline: the namespace is -n, else the key's (no kubeconfig needed).
            let namespace = match &kube.namespace {
                Some(namespace) => namespace.clone(),
                None => key.namespace.clone(),
            };
            (key, namespace)
        }
        (Some(name), None) => {
            let context = KubeContext::load(kube).await?;
            let key = fetch_key(&context, name).await?;
            (key, context.namespace)
        }
        (None, None) => {
            return Err(PluginError::Usage(
                "give --key KMSKEY or --public-key-file FILE".to_owned(),
            ));
        }
    };
    let plaintext = read_plaintext(args.from_file.as_deref())?;
    let sealed_value = key.seal(&namespace, &args.name, &plaintext)?;
    drop(plaintext);
    let manifest = render_manifest(
        args.kind,
        &namespace,
        &args.name,
        args.parameter_name.as_deref(),
        &sealed_value,
    )?;
    write_output(args.output.as_deref(), manifest.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `kubectl coffer public-key`.
pub async fn run_public_key(kube: &KubeArgs, args: PublicKeyArgs) -> Result<ExitCode, PluginError> {
    let context = KubeContext::load(kube).await?;
    let key = fetch_key(&context, &args.key).await?;
    let mut text = serde_json::to_string_pretty(&key)
        .map_err(|_| PluginError::Internal("the key file could not be rendered"))?;
    text.push('\n');
    write_output(args.output.as_deref(), text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

async fn fetch_key(context: &KubeContext, name: &str) -> Result<SealingKey, PluginError> {
    let keys: Api<KmsKey> = Api::namespaced(context.client.clone(), &context.namespace);
    let obj = keys
        .get_opt(name)
        .await
        .map_err(PluginError::kube(format!(
            "reading KmsKey {}/{name}",
            context.namespace
        )))?
        .ok_or_else(|| PluginError::KeyNotFound {
            namespace: context.namespace.clone(),
            name: name.to_owned(),
        })?;
    SealingKey::from_kmskey(&obj, &context.namespace, name)
}

/// The value to seal: the file's bytes, or standard input's, exactly as they are.
fn read_plaintext(from_file: Option<&Path>) -> Result<Zeroizing<Vec<u8>>, PluginError> {
    let mut plaintext = Zeroizing::new(Vec::new());
    match from_file {
        Some(path) => {
            let mut file = std::fs::File::open(path).map_err(PluginError::file(path))?;
            file.read_to_end(&mut plaintext)
                .map_err(PluginError::file(path))?;
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("Reading the value from standard input (end it with Ctrl-D)...");
            }
            stdin
                .lock()
                .take(u64::try_from(MAX_PLAINTEXT_LEN + 1).unwrap_or(u64::MAX))
                .read_to_end(&mut plaintext)
                .map_err(|source| PluginError::Io {
                    what: "reading standard input",
                    source,
                })?;
        }
    }
    Ok(plaintext)
}

/// Writes `bytes` to `path`, else standard output.
pub fn write_output(path: Option<&Path>, bytes: &[u8]) -> Result<(), PluginError> {
    match path {
        Some(path) => std::fs::write(path, bytes).map_err(PluginError::file(PathBuf::from(path))),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(bytes)
                .and_then(|()| stdout.flush())
                .map_err(|source| PluginError::Io {
                    what: "writing standard output",
                    source,
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::asymmetric::{self, KeyPair};
    use crate::crypto::sealed::{SealedValue, SealedValueError};

    const KEY_ID: &str = "6f1c2a4e-3b5d-4e7f-8a9b-0c1d2e3f4a5b";

    fn sealing_key(pair: &KeyPair, spec: KeySpec, namespace: &str) -> SealingKey {
        SealingKey {
            api_version: KEY_FILE_API_VERSION.to_owned(),
            kind: KEY_FILE_KIND.to_owned(),
            namespace: namespace.to_owned(),
            name: "sealing".to_owned(),
            key_id: KEY_ID.to_owned(),
            key_spec: spec.as_str().to_owned(),
            public_key: STANDARD.encode(&pair.public_spki_der),
        }
    }

    fn open(
        pair: &KeyPair,
        spec: KeySpec,
        namespace: &str,
        name: &str,
        sealed_value: &str,
    ) -> Result<Vec<u8>, SealedValueError> {
        let blob = STANDARD.decode(sealed_value).unwrap();
        let parsed = SealedValue::parse(&blob)?;
        assert_eq!(parsed.key_id(), KEY_ID);
        parsed
            .open(
                spec,
                &SealTarget {
                    namespace,
                    resource_name: name,
                },
                |algorithm, wrapped| {
                    asymmetric::decrypt(spec, &pair.private_pkcs8_der, algorithm, wrapped)
                },
            )
            .map(|bytes| bytes.expose().to_vec())
    }

    #[test]
    fn sealed_values_open_with_the_existing_opener_for_their_own_name_only() {
        let spec = KeySpec::Rsa2048;
        let pair = asymmetric::generate(spec).unwrap();
        let key = sealing_key(&pair, spec, "team-a");
        let value = b"correct horse battery staple\n\x00\xff";
        let sealed_value = key.seal("team-a", "db-password", value).unwrap();
        assert_eq!(
            open(&pair, spec, "team-a", "db-password", &sealed_value).unwrap(),
            value
        );
        assert_eq!(
            open(&pair, spec, "team-a", "other", &sealed_value).unwrap_err(),
            SealedValueError::Unopenable
        );
        assert_eq!(
            open(&pair, spec, "team-b", "db-password", &sealed_value).unwrap_err(),
            SealedValueError::Unopenable
        );
        // A key of one namespace never seals for another: it could not open there.
        assert!(matches!(
            key.seal("team-b", "db-password", value),
            Err(PluginError::KeyNamespace { .. })
        ));
        assert!(matches!(
            key.seal("team-a", "db-password", b""),
            Err(PluginError::Sealing(SealedValueError::PlaintextLength(0)))
        ));
    }

    #[test]
    fn only_ready_rsa_encryption_kmskeys_seal() {
        let pair = asymmetric::generate(KeySpec::Rsa2048).unwrap();
        let kmskey = |spec: serde_json::Value, status: serde_json::Value| -> KmsKey {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "coffer.dev/v1alpha1",
                "kind": "KmsKey",
                "metadata": {"name": "sealing", "namespace": "team-a"},
                "spec": spec,
                "status": status,
            }))
            .unwrap()
        };
        let spec = serde_json::json!({"keySpec": "RSA_2048", "keyUsage": "ENCRYPT_DECRYPT"});
        let status = serde_json::json!({
            "keyId": KEY_ID,
            "keySpec": "RSA_2048",
            "keyState": "Enabled",
            "publicKey": STANDARD.encode(&pair.public_spki_der),
        });
        let key =
            SealingKey::from_kmskey(&kmskey(spec.clone(), status.clone()), "team-a", "sealing")
                .unwrap();
        assert_eq!(key, sealing_key(&pair, KeySpec::Rsa2048, "team-a"));

        let mut signing = spec.clone();
        signing["keyUsage"] = "SIGN_VERIFY".into();
        let mut deleting = status.clone();
        deleting["keyState"] = "PendingDeletion".into();
        let mut no_key = status.clone();
        no_key.as_object_mut().unwrap().remove("publicKey");
        let mut ecc = status.clone();
        ecc["keySpec"] = "ECC_NIST_P256".into();
        for (spec, status, why) in [
            (signing, status.clone(), "ENCRYPT_DECRYPT"),
            (spec.clone(), deleting, "pending deletion"),
            (spec.clone(), no_key, "publicKey"),
            (spec.clone(), ecc, "not RSA"),
            (spec.clone(), serde_json::json!({}), "keyId"),
        ] {
            let err = SealingKey::from_kmskey(&kmskey(spec, status), "team-a", "sealing")
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn key_files_round_trip_and_are_checked() {
        let spec = KeySpec::Rsa3072;
        let pair = asymmetric::generate(spec).unwrap();
        let key = sealing_key(&pair, spec, "team-a");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        std::fs::write(&path, serde_json::to_vec(&key).unwrap()).unwrap();
        assert_eq!(SealingKey::from_file(&path).unwrap(), key);
        let sealed_value = SealingKey::from_file(&path)
            .unwrap()
            .seal("team-a", "x", b"v")
            .unwrap();
        assert_eq!(
            open(&pair, spec, "team-a", "x", &sealed_value).unwrap(),
            b"v"
        );

        for broken in [
            SealingKey {
                key_spec: "ECC_NIST_P256".to_owned(),
                ..key.clone()
            },
            SealingKey {
                public_key: "%%%".to_owned(),
                ..key.clone()
            },
            SealingKey {
                kind: "Other".to_owned(),
                ..key.clone()
            },
        ] {
            std::fs::write(&path, serde_json::to_vec(&broken).unwrap()).unwrap();
            assert!(
                matches!(
                    SealingKey::from_file(&path),
                    Err(PluginError::KeyFile { .. })
                ),
                "{broken:?}"
            );
        }
        std::fs::write(&path, b"not json").unwrap();
        assert!(SealingKey::from_file(&path).is_err());
    }

    #[test]
    fn manifests_carry_the_sealed_value_under_their_namespace_and_name() {
        let secret = render_manifest(SealKind::Secret, "team-a", "db", None, "Q1NWMQ==").unwrap();
        assert_eq!(
            secret,
            "apiVersion: coffer.dev/v1alpha1\nkind: Secret\nmetadata:\n  name: db\n  namespace: team-a\nspec:\n  sealedValue: Q1NWMQ==\n"
        );
        let parameter = render_manifest(
            SealKind::Parameter,
            "team-a",
            "db-url",
            Some("/app/db/url"),
            "Q1NWMQ==",
        )
        .unwrap();
        let parsed: serde_json::Value = serde_yaml::from_str(&parameter).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "apiVersion": "coffer.dev/v1alpha1",
                "kind": "Parameter",
                "metadata": {"name": "db-url", "namespace": "team-a"},
                "spec": {"name": "/app/db/url", "type": "SecureString", "sealedValue": "Q1NWMQ=="},
            })
        );
        let defaulted =
            render_manifest(SealKind::Parameter, "team-a", "db-url", None, "AA==").unwrap();
        assert!(
            defaulted.contains("  name: db-url\n  type: SecureString\n"),
            "{defaulted}"
        );
    }

    #[test]
    fn manifests_validate_against_the_crds() {
        use crate::resources::parameter::Parameter;
        use crate::resources::secret::Secret;
        let secret = render_manifest(SealKind::Secret, "ns", "db", None, "Q1NWMQ==").unwrap();
        let secret: Secret = serde_yaml::from_str(&secret).unwrap();
        assert_eq!(secret.spec.sealed_value.as_deref(), Some("Q1NWMQ=="));
        let parameter =
            render_manifest(SealKind::Parameter, "ns", "p", Some("/a/b"), "Q1NWMQ==").unwrap();
        let parameter: Parameter = serde_yaml::from_str(&parameter).unwrap();
        assert_eq!(parameter.spec.name, "/a/b");
        assert_eq!(parameter.spec.sealed_value.as_deref(), Some("Q1NWMQ=="));
    }

    #[test]
    fn manifests_pass_the_crds_validation_rules() {
        use crate::resources::cel_check::assert_valid;
        use crate::resources::parameter::Parameter;
        use crate::resources::secret::Secret;
        let as_json = |yaml: String| -> serde_json::Value { serde_yaml::from_str(&yaml).unwrap() };
        assert_valid::<Secret>(&as_json(
            render_manifest(SealKind::Secret, "ns", "db", None, "Q1NWMQ==").unwrap(),
        ));
        assert_valid::<Parameter>(&as_json(
            render_manifest(SealKind::Parameter, "ns", "p", Some("/a/b"), "Q1NWMQ==").unwrap(),
        ));
    }
}
