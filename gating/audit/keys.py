"""Ed25519 signing keys for audit entries: generate, load, name (keyid), write with safe modes.

The keyid is the sha256 of the raw 32-byte public key, so anyone holding the public key can compute
it and match it against an envelope's signature without trusting the envelope.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gating.errors import GatingError


class KeyError_(GatingError):
    """A key file that is missing, unreadable or not an Ed25519 key; the message names the source."""


def generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def keyid(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """sha256 (hex) of the raw public key."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(raw_public(pub)).hexdigest()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


_ED25519_ONLY = "audit entries are signed with Ed25519 (`gating keygen` writes a pair)"


def _not_pem(data: bytes, source: str, want: str) -> str | None:
    """What a key file is instead, when it is a kind people mix up; None when it is none of them."""
    if want == "private" and b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        return (f"{source}: is a public key; signing needs the private key (the file `gating keygen` "
                "wrote without .pub)")
    if b"ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data:
        return (f"{source}: the private key is protected by a passphrase, which gating cannot ask for; "
                "use an unencrypted PEM key kept as a secret (e.g. `openssl pkey -in KEY -out KEY.plain`)")
    if b"OPENSSH PRIVATE KEY-----" in data or data.lstrip().startswith(b"ssh-"):
        return f"{source}: is an OpenSSH key; gating reads PEM keys (`gating keygen` writes a pair)"
    return None


def load_private(data: bytes, source: str = "private key") -> Ed25519PrivateKey:
    problem = _not_pem(data, source, "private")
    if problem:
        raise KeyError_(problem)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyError_(f"{source}: not a PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{source}: not an Ed25519 key ({type(key).__name__}); {_ED25519_ONLY}")
    return key


def load_public(data: bytes, source: str = "public key") -> Ed25519PublicKey:
    """A PEM public key; a PEM private key is accepted too (its public half is used)."""
    if b"PRIVATE KEY" in data:
        return load_private(data, source).public_key()
    problem = _not_pem(data, source, "public")
    if problem:
        raise KeyError_(problem)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyError_(f"{source}: not a PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyError_(f"{source}: not an Ed25519 key ({type(key).__name__}); {_ED25519_ONLY}")
    return key


def read_file(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise KeyError_(f"{path}: cannot read key file ({e.strerror})") from None


def write_keypair(private_path: Path, public_path: Path, force: bool = False) -> Ed25519PrivateKey:
    """Write a new key pair; the private key is created with mode 0600 and never world-readable."""
    if private_path.resolve() == public_path.resolve():
        raise KeyError_(f"{public_path}: the public key cannot be written over the private key; "
                        "pass another --public file")
    if not force:
        for p in (private_path, public_path):
            if p.exists():
                raise KeyError_(f"{p}: already exists (pass --force to replace it)")
    key = generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    if force and private_path.exists():
        private_path.unlink()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem(key))
    os.chmod(private_path, 0o600)  # umask cannot widen it, but be explicit
    public_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.write_bytes(public_pem(key))
    return key
