"""Sealing a value for a Secret's spec.sealedValue, without Coffer: the format of
docs/sealed-values.md (version 1), written with the `cryptography` package alone.

    blob = b"CSV1" || len(key_id) (1 byte) || key_id || len(wrapped) (2 bytes, big-endian)
           || wrapped || AES-256-SIV(plaintext, associated data [binding, header])

The Rust side (src/crypto/sealed.rs) opens what this writes; a known-answer test there holds a
blob made here.
"""

from __future__ import annotations

import base64
import os
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

MAGIC = b"CSV1"
BINDING_LABEL = b"coffer.dev/sealed-value/v1"
MAX_KEY_ID_LEN = 64
MAX_PLAINTEXT_LEN = 64 * 1024
RSA_MODULUS_BITS = (2048, 3072, 4096)


def seal(public_key_der: bytes, key_id: str, namespace: str, name: str, plaintext: bytes) -> str:
    """Seals `plaintext` to an RSA KmsKey's public key (SubjectPublicKeyInfo DER, as GetPublicKey
    returns it and status.publicKey holds it in base64) for the Secret `name` in `namespace`.
    Returns the blob in standard base64, ready for spec.sealedValue."""
    if not 1 <= len(plaintext) <= MAX_PLAINTEXT_LEN:
        raise ValueError(f"plaintext must be 1 to {MAX_PLAINTEXT_LEN} bytes")
    key_id_bytes = key_id.encode("ascii")
    if not 1 <= len(key_id_bytes) <= MAX_KEY_ID_LEN or not all(0x21 <= b <= 0x7E for b in key_id_bytes):
        raise ValueError(f"key id must be 1 to {MAX_KEY_ID_LEN} printable ASCII characters")
    if "\0" in namespace or "\0" in name:
        raise ValueError("namespace and name must not contain NUL")
    public_key = serialization.load_der_public_key(public_key_der)
    if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size not in RSA_MODULUS_BITS:
        raise ValueError("the key must be an RSA_2048, RSA_3072 or RSA_4096 public key")

    siv_key = os.urandom(64)
    wrapped = public_key.encrypt(
        siv_key,
        padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    header = MAGIC + bytes([len(key_id_bytes)]) + key_id_bytes + struct.pack(">H", len(wrapped)) + wrapped
    binding = BINDING_LABEL + b"\0" + namespace.encode("utf-8") + b"\0" + name.encode("utf-8")
    # AESSIV returns the 16-byte tag followed by the ciphertext, as RFC 5297 does.
    sealed = AESSIV(siv_key).encrypt(plaintext, [binding, header])
    return base64.b64encode(header + sealed).decode("ascii")
