"""Personal signing keys: one NIST P-256 key pair per person.

P-256 rather than ed25519 because the OpenSSF `model-signing` library, which signs export bundles,
accepts only NIST elliptic-curve keys; one key then signs both ledger records and bundles.

The private key lives in the user's config directory (`$TICKETLAB_KEY_DIR`, default
`~/.config/ticketlab/keys`), encrypted under a scrypt-derived key (`keyfile.py`) and readable by its
owner only. The passphrase comes from `$TICKETLAB_PASSPHRASE` (automation) or a prompt.
"""

from __future__ import annotations

import base64
import functools
import getpass
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pruning.durable import atomic_write_bytes
from pruning.errors import TicketLabError

from . import keyfile

PASSPHRASE_ENV = "TICKETLAB_PASSPHRASE"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def key_dir() -> Path:
    env = os.environ.get("TICKETLAB_KEY_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "ticketlab" / "keys"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name.strip()):
        raise TicketLabError(f"{name!r} is not a usable person name: use letters, digits, '.', '_' or '-' "
                             f"(at most 64, starting with a letter or digit).")
    return name.strip()


def private_path(name: str) -> Path:
    return key_dir() / f"{check_name(name)}.key.pem"


def public_path(name: str) -> Path:
    return key_dir() / f"{check_name(name)}.pub.pem"


def fingerprint(public_pem: str | bytes) -> str:
    """sha256 of the DER public key: the key's id in the ledger and in signatures."""
    key = load_public(public_pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def load_public(public_pem: str | bytes) -> ec.EllipticCurvePublicKey:
    return _load_public(public_pem.encode() if isinstance(public_pem, str) else bytes(public_pem))


@functools.lru_cache(maxsize=1024)
def _load_public(data: bytes) -> ec.EllipticCurvePublicKey:
    """Parsed once per key: the audit verifies every record and witness head with a handful of keys."""
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise TicketLabError(f"not a PEM public key ({e}).") from e
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise TicketLabError("Ticket Lab keys are NIST P-256 (secp256r1) elliptic-curve keys; this one is not.")
    return key


def passphrase(name: str, *, confirm: bool = False) -> str:
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env
    if not sys.stdin.isatty():
        raise TicketLabError(f"the passphrase for {name}'s key is needed: set ${PASSPHRASE_ENV} (automation) or run "
                             f"this in a terminal to be asked for it.")
    first = getpass.getpass(f"passphrase for {name}'s key: ")
    if confirm and getpass.getpass("again: ") != first:
        raise TicketLabError("the two passphrases differ; nothing was written.")
    return first


def generate(name: str, pw: str, *, overwrite: bool = False) -> tuple[Path, str]:
    """Write a new encrypted key pair for `name`; returns (private key path, public PEM)."""
    name = check_name(name)
    weak = keyfile.passphrase_problem(pw)
    if weak:
        raise TicketLabError(f"{weak}: whoever copies the key file can try passphrases offline; nothing was written.")
    priv, pub = private_path(name), public_path(name)
    if priv.exists() and not overwrite:
        raise TicketLabError(f"{priv} already exists: {name} has a key. Use it, or move it aside to make a new one "
                             f"(the ledger must then register the new public key).")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = keyfile.seal(key, pw)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    d = key_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    atomic_write_bytes(priv, pem)
    os.chmod(priv, 0o600)  # the durable writer applies the umask; a private key is the owner's alone
    atomic_write_bytes(pub, public_pem.encode())
    return priv, public_pem


@dataclass
class Signer:
    """An unlocked key and the person it belongs to (`path`: where it was unlocked from)."""
    name: str
    key: ec.EllipticCurvePrivateKey
    path: Path

    @property
    def public_pem(self) -> str:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    @property
    def key_id(self) -> str:
        return fingerprint(self.public_pem)

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


def unlock(name: str, pw: str | None = None) -> Signer:
    """Decrypt `name`'s private key. A wrong passphrase or a missing file is one clear error."""
    name = check_name(name)
    path = private_path(name)
    if not path.is_file():
        raise TicketLabError(f"no private key for {name} at {path}: create one with `ticketlab keygen {name}` and have "
                             f"an admin register it (or set $TICKETLAB_KEY_DIR to where your key is).")
    mode = path.stat().st_mode & 0o077
    if mode:
        raise TicketLabError(f"{path} can be read by other users (mode {oct(path.stat().st_mode & 0o777)}): "
                             f"`chmod 600 {path}`, and consider the key compromised if others could read it.")
    pw = passphrase(name) if pw is None else pw
    data = path.read_bytes()
    try:
        if keyfile.is_sealed(data):
            key = keyfile.open_sealed(data, pw)
        else:  # the PKCS#8 (PBKDF2) format of earlier versions: opened once, then sealed with scrypt
            key = serialization.load_pem_private_key(data, pw.encode())
            if isinstance(key, ec.EllipticCurvePrivateKey):
                atomic_write_bytes(path, keyfile.seal(key, pw))
                os.chmod(path, 0o600)
    except (ValueError, TypeError) as e:
        raise TicketLabError(f"wrong passphrase for {name}'s key {path} (or the file is damaged); nothing was "
                             f"recorded. Check ${PASSPHRASE_ENV} or retype it.") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TicketLabError(f"{path} is not an elliptic-curve key.")
    return Signer(name=name, key=key, path=path)


def verify(public_pem: str, data: bytes, signature: str) -> bool:
    try:
        load_public(public_pem).verify(base64.b64decode(signature), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
