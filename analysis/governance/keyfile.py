"""How a private key is kept at rest: encrypted under a key derived from the passphrase with scrypt.

PKCS#8's `BestAvailableEncryption` derives its key with PBKDF2 (2,048 iterations in `cryptography`),
so whoever copies a key directory can try passphrases by the million per second. scrypt is memory-hard:
the default cost (N = 2^17, r = 8, p = 1: 128 MiB and about a second per try here) makes each guess
cost memory and time that GPUs do not parallelise cheaply. The file records its own parameters, so a
key made at another cost still opens, and a key in the old PKCS#8 format is re-sealed with scrypt the
first time it is unlocked.

`$TICKETLAB_KDF_LOG2N` lowers the cost for test suites only (they make dozens of keys); the default is
the strong one and a test checks it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT = "ticketlab-private-key/1"
DEFAULT_LOG2N, R, P = 17, 8, 1
COST_ENV = "TICKETLAB_KDF_LOG2N"
MIN_PASSPHRASE = 12


def log2n() -> int:
    env = os.environ.get(COST_ENV, "").strip()
    return int(env) if env.isdigit() and 10 <= int(env) <= 22 else DEFAULT_LOG2N


def passphrase_problem(pw: str) -> str:
    """'' when the passphrase is strong enough to protect a key file that may be copied, else why not."""
    if len(pw) < MIN_PASSPHRASE:
        return f"choose a passphrase of at least {MIN_PASSPHRASE} characters"
    if len(set(pw)) < 6:
        return "choose a passphrase with at least 6 different characters"
    low = pw.lower()
    if any(low == (low[:k] * (len(low) // k + 1))[:len(low)] for k in range(1, len(low) // 2 + 1)):
        return "choose a passphrase that is not one short pattern repeated"
    return ""


def _derive(pw: str, salt: bytes, n_log2: int, r: int, p: int) -> bytes:
    n = 1 << n_log2
    return hashlib.scrypt(pw.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * 2 + 2**20, dklen=32)


def seal(key, pw: str) -> bytes:
    """The private key as the JSON text stored in `<name>.key.pem`."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    salt, nonce, n_log2 = os.urandom(16), os.urandom(12), log2n()
    aad = FORMAT.encode()
    blob = AESGCM(_derive(pw, salt, n_log2, R, P)).encrypt(nonce, der, aad)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return (json.dumps({"format": FORMAT, "kdf": {"name": "scrypt", "log2_n": n_log2, "r": R, "p": P,
                                                  "salt": b64(salt)},
                        "cipher": "AES-256-GCM", "nonce": b64(nonce), "ciphertext": b64(blob)}, indent=1) + "\n").encode()


def is_sealed(data: bytes) -> bool:
    return data.lstrip().startswith(b"{")


def open_sealed(data: bytes, pw: str):
    """The private key, or ValueError (wrong passphrase or a damaged file)."""
    try:
        doc = json.loads(data)
        kdf = doc["kdf"]
        if doc.get("format") != FORMAT or kdf.get("name") != "scrypt":
            raise ValueError(f"unknown key format {doc.get('format')!r}")
        n_log2, r, p = int(kdf["log2_n"]), int(kdf["r"]), int(kdf["p"])
        if not (10 <= n_log2 <= 22 and 1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError("scrypt parameters out of range")
        secret = _derive(pw, base64.b64decode(kdf["salt"]), n_log2, r, p)
        der = AESGCM(secret).decrypt(base64.b64decode(doc["nonce"]), base64.b64decode(doc["ciphertext"]),
                                     FORMAT.encode())
    except (KeyError, TypeError, InvalidTag, json.JSONDecodeError) as e:
        raise ValueError(str(e) or type(e).__name__) from e
    return serialization.load_der_private_key(der, None)


def cost(data: bytes) -> int | None:
    """log2(N) of a sealed key file (None for the old PKCS#8 format)."""
    try:
        return int(json.loads(data)["kdf"]["log2_n"]) if is_sealed(data) else None
    except (ValueError, KeyError, TypeError):
        return None
