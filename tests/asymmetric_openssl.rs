//! Interoperability of `coffer::crypto::asymmetric` with OpenSSL: what Coffer
//! signs, OpenSSL verifies; what OpenSSL encrypts or signs, Coffer opens or
//! verifies; and both read each other's key encodings. The `openssl` CLI must
//! be installed: without it these tests fail, they never pass silently.

// Test code: a failed assumption is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use coffer::crypto::asymmetric::{
    self, EncryptionAlgorithm, KeyPair, KeySpec, MessageType, SigningAlgorithm,
};
use sha2::{Digest, Sha256, Sha384};
use tempfile::TempDir;

const MESSAGE: &[u8] = b"Coffer and OpenSSL agree on what this message says.";

fn openssl_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path =
            PathBuf::from(std::env::var_os("OPENSSL_BIN").unwrap_or_else(|| "openssl".into()));
        match Command::new(&path).arg("version").output() {
            Ok(output) if output.status.success() => path,
            Ok(output) => panic!(
                "`{} version` failed ({}): these interop tests need a working OpenSSL 3 CLI",
                path.display(),
                output.status
            ),
            Err(error) => panic!(
                "the `openssl` CLI was not found ({error}): these interop tests need it; \
                 install OpenSSL 3 (Debian: apt-get install openssl) or set OPENSSL_BIN"
            ),
        }
    })
}

/// Runs `openssl` with the given arguments and returns its output, whatever
/// its exit status.
fn openssl(args: &[&str]) -> Output {
    Command::new(openssl_path())
        .args(args)
        .output()
        .expect("run openssl")
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "openssl {what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn key(spec: KeySpec) -> &'static KeyPair {
    static RSA_2048: OnceLock<KeyPair> = OnceLock::new();
    static P256: OnceLock<KeyPair> = OnceLock::new();
    static P384: OnceLock<KeyPair> = OnceLock::new();
    let cell = match spec {
        KeySpec::Rsa2048 => &RSA_2048,
        KeySpec::EccNistP256 => &P256,
        KeySpec::EccNistP384 => &P384,
        other => panic!("this test binary does not use {other} keys"),
    };
    cell.get_or_init(|| asymmetric::generate(spec).expect("generate key"))
}

/// A scratch directory holding one key pair's DER files.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new(pair: &KeyPair) -> Self {
        let scratch = Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        scratch.write("public.der", &pair.public_spki_der);
        scratch.write("private.der", &pair.private_pkcs8_der);
        scratch
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.path(name);
        std::fs::write(&path, bytes).expect("write scratch file");
        path
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read scratch file")
    }
}

fn coffer_sign(
    spec: KeySpec,
    algorithm: SigningAlgorithm,
    message_type: MessageType,
    message: &[u8],
) -> Vec<u8> {
    asymmetric::sign(
        spec,
        &key(spec).private_pkcs8_der,
        algorithm,
        message_type,
        message,
    )
    .expect("coffer signs")
}

fn flipped(bytes: &[u8]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    bytes
}

/// `openssl dgst -<hash> -verify public.der -signature sig message`.
fn dgst_verify(scratch: &Scratch, hash: &str, signature: &[u8], extra: &[&str]) -> Output {
    let public = scratch.path("public.der");
    let message = scratch.write("message.bin", MESSAGE);
    let signature = scratch.write("signature.bin", signature);
    let mut args = vec![
        "dgst",
        hash,
        "-verify",
        &public,
        "-keyform",
        "DER",
        "-signature",
        &signature,
    ];
    args.extend_from_slice(extra);
    args.push(&message);
    openssl(&args)
}

#[test]
fn openssl_reads_coffer_keys_as_the_same_key_pair() {
    for spec in [KeySpec::Rsa2048, KeySpec::EccNistP256, KeySpec::EccNistP384] {
        let pair = key(spec);
        let scratch = Scratch::new(pair);
        let output = openssl(&[
            "pkey",
            "-inform",
            "DER",
            "-in",
            &scratch.path("private.der"),
            "-pubout",
            "-outform",
            "DER",
            "-out",
            &scratch.path("derived.der"),
        ]);
        assert_success(&output, &format!("pkey reading a {spec} PKCS#8 key"));
        assert_eq!(
            scratch.read("derived.der"),
            pair.public_spki_der,
            "OpenSSL derives the same SubjectPublicKeyInfo from the {spec} private key"
        );
    }
}

#[test]
fn openssl_verifies_a_coffer_rsa_pkcs1v15_signature() {
    let spec = KeySpec::Rsa2048;
    let scratch = Scratch::new(key(spec));
    let signature = coffer_sign(
        spec,
        SigningAlgorithm::RsassaPkcs1V15Sha256,
        MessageType::Raw,
        MESSAGE,
    );

    let output = dgst_verify(&scratch, "-sha256", &signature, &[]);
    assert_success(&output, "dgst -verify (RSASSA_PKCS1_V1_5_SHA_256)");
    assert!(String::from_utf8_lossy(&output.stdout).contains("Verified OK"));

    let output = dgst_verify(&scratch, "-sha256", &flipped(&signature), &[]);
    assert!(
        !output.status.success(),
        "OpenSSL must reject an altered signature"
    );
}

#[test]
fn openssl_verifies_a_coffer_rsa_pss_signature_over_a_digest() {
    let spec = KeySpec::Rsa2048;
    let scratch = Scratch::new(key(spec));
    let digest = Sha384::digest(MESSAGE).to_vec();
    let signature = coffer_sign(
        spec,
        SigningAlgorithm::RsassaPssSha384,
        MessageType::Digest,
        &digest,
    );
    let digest_path = scratch.write("digest.bin", &digest);
    let signature_path = scratch.write("signature.bin", &signature);
    let public = scratch.path("public.der");
    let verify_with_salt = |salt: &str| {
        openssl(&[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            &public,
            "-keyform",
            "DER",
            "-in",
            &digest_path,
            "-sigfile",
            &signature_path,
            "-pkeyopt",
            "digest:sha384",
            "-pkeyopt",
            "rsa_padding_mode:pss",
            "-pkeyopt",
            &format!("rsa_pss_saltlen:{salt}"),
        ])
    };

    let output = verify_with_salt("digest");
    assert_success(
        &output,
        "pkeyutl -verify (RSASSA_PSS_SHA_384, salt = digest)",
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("Signature Verified Successfully"));

    // The salt really is the digest length (48), as AWS uses: a verifier that
    // insists on another length refuses the signature.
    let output = verify_with_salt("32");
    assert!(
        !output.status.success(),
        "a PSS signature with a 48-byte salt must not verify as a 32-byte-salt one"
    );

    // The RAW form of the same message verifies through `openssl dgst` too.
    let raw_signature = coffer_sign(
        spec,
        SigningAlgorithm::RsassaPssSha256,
        MessageType::Raw,
        MESSAGE,
    );
    let output = dgst_verify(
        &scratch,
        "-sha256",
        &raw_signature,
        &[
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
        ],
    );
    assert_success(&output, "dgst -verify (RSASSA_PSS_SHA_256)");
}

#[test]
fn openssl_verifies_coffer_ecdsa_signatures() {
    let cases = [
        (
            KeySpec::EccNistP256,
            SigningAlgorithm::EcdsaSha256,
            "-sha256",
        ),
        (
            KeySpec::EccNistP384,
            SigningAlgorithm::EcdsaSha384,
            "-sha384",
        ),
    ];
    for (spec, algorithm, hash) in cases {
        let scratch = Scratch::new(key(spec));
        let signature = coffer_sign(spec, algorithm, MessageType::Raw, MESSAGE);
        let output = dgst_verify(&scratch, hash, &signature, &[]);
        assert_success(&output, &format!("dgst -verify ({algorithm})"));
        assert!(String::from_utf8_lossy(&output.stdout).contains("Verified OK"));

        let output = dgst_verify(&scratch, hash, &flipped(&signature), &[]);
        assert!(
            !output.status.success(),
            "OpenSSL must reject an altered {algorithm} signature"
        );
    }

    // A DIGEST-mode ECDSA signature is the same thing to OpenSSL.
    let spec = KeySpec::EccNistP256;
    let scratch = Scratch::new(key(spec));
    let digest = Sha256::digest(MESSAGE).to_vec();
    let signature = coffer_sign(
        spec,
        SigningAlgorithm::EcdsaSha256,
        MessageType::Digest,
        &digest,
    );
    let output = dgst_verify(&scratch, "-sha256", &signature, &[]);
    assert_success(&output, "dgst -verify (ECDSA_SHA_256 over a DIGEST)");
}

#[test]
fn coffer_verifies_openssl_signatures() {
    let cases: [(KeySpec, SigningAlgorithm, &str, &[&str]); 4] = [
        (
            KeySpec::Rsa2048,
            SigningAlgorithm::RsassaPkcs1V15Sha256,
            "-sha256",
            &[],
        ),
        (
            KeySpec::Rsa2048,
            SigningAlgorithm::RsassaPssSha512,
            "-sha512",
            &[
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:digest",
            ],
        ),
        (
            KeySpec::EccNistP256,
            SigningAlgorithm::EcdsaSha256,
            "-sha256",
            &[],
        ),
        (
            KeySpec::EccNistP384,
            SigningAlgorithm::EcdsaSha384,
            "-sha384",
            &[],
        ),
    ];
    for (spec, algorithm, hash, extra) in cases {
        let pair = key(spec);
        let scratch = Scratch::new(pair);
        let private = scratch.path("private.der");
        let message = scratch.write("message.bin", MESSAGE);
        let signature_path = scratch.path("signature.bin");
        let mut args = vec![
            "dgst",
            hash,
            "-sign",
            &private,
            "-keyform",
            "DER",
            "-out",
            &signature_path,
        ];
        args.extend_from_slice(extra);
        args.push(&message);
        assert_success(&openssl(&args), &format!("dgst -sign ({algorithm})"));
        let signature = scratch.read("signature.bin");

        let verify = |message: &[u8], signature: &[u8]| {
            asymmetric::verify(
                spec,
                &pair.public_spki_der,
                algorithm,
                MessageType::Raw,
                message,
                signature,
            )
            .expect("well-formed verify request")
        };
        assert!(
            verify(MESSAGE, &signature),
            "Coffer verifies OpenSSL's {algorithm}"
        );
        assert!(!verify(b"another message", &signature));
        assert!(!verify(MESSAGE, &flipped(&signature)));
    }
}

#[test]
fn coffer_decrypts_openssl_oaep_ciphertexts() {
    let spec = KeySpec::Rsa2048;
    let pair = key(spec);
    let scratch = Scratch::new(pair);
    let cases = [
        (EncryptionAlgorithm::RsaesOaepSha256, "sha256"),
        (EncryptionAlgorithm::RsaesOaepSha1, "sha1"),
    ];
    for (algorithm, md) in cases {
        let max = asymmetric::max_plaintext_len(spec, algorithm).expect("RSA encrypts");
        let plaintext: Vec<u8> = (0..max)
            .map(|i| u8::try_from(i * 7 % 256).unwrap())
            .collect();
        let input = scratch.write("plaintext.bin", &plaintext);
        let output_path = scratch.path("ciphertext.bin");
        let public = scratch.path("public.der");
        let output = openssl(&[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            &public,
            "-keyform",
            "DER",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            &format!("rsa_oaep_md:{md}"),
            // No rsa_mgf1_md: OpenSSL's default MGF1 hash is the OAEP hash,
            // which is what AWS uses.
            "-in",
            &input,
            "-out",
            &output_path,
        ]);
        assert_success(&output, &format!("pkeyutl -encrypt ({algorithm})"));
        let ciphertext = scratch.read("ciphertext.bin");
        assert_eq!(ciphertext.len(), 256);

        let opened = asymmetric::decrypt(spec, &pair.private_pkcs8_der, algorithm, &ciphertext)
            .expect("Coffer opens OpenSSL's OAEP ciphertext");
        assert_eq!(*opened, plaintext, "{algorithm}");
    }
}

#[test]
fn openssl_decrypts_coffer_oaep_ciphertexts() {
    let spec = KeySpec::Rsa2048;
    let pair = key(spec);
    let scratch = Scratch::new(pair);
    for (algorithm, md) in [
        (EncryptionAlgorithm::RsaesOaepSha256, "sha256"),
        (EncryptionAlgorithm::RsaesOaepSha1, "sha1"),
    ] {
        let plaintext = b"a 256-bit data key, wrapped....!";
        let ciphertext = asymmetric::encrypt(spec, &pair.public_spki_der, algorithm, plaintext)
            .expect("Coffer encrypts");
        let input = scratch.write("ciphertext.bin", &ciphertext);
        let output_path = scratch.path("plaintext.bin");
        let private = scratch.path("private.der");
        let output = openssl(&[
            "pkeyutl",
            "-decrypt",
            "-inkey",
            &private,
            "-keyform",
            "DER",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            &format!("rsa_oaep_md:{md}"),
            "-pkeyopt",
            &format!("rsa_mgf1_md:{md}"),
            "-in",
            &input,
            "-out",
            &output_path,
        ]);
        assert_success(&output, &format!("pkeyutl -decrypt ({algorithm})"));
        assert_eq!(scratch.read("plaintext.bin"), plaintext, "{algorithm}");
    }
}
