"""Signing export bundles with the OpenSSF `model-signing` library (private-key method: offline).

`model.sig` (a Sigstore bundle whose DSSE payload lists the sha256 of every file) covers every file of
the bundle, manifest.json included, so an edited manifest cannot be re-digested into validity without
the signer's private key. The key is the person's P-256 Ticket Lab key (`keys.py`).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from pruning.errors import TicketLabError

from .keys import Signer

SIG_FILE = "model.sig"
METHOD = "OpenSSF model-signing 1.1.1, elliptic-curve key (NIST P-256, ECDSA-SHA256)"


def _hashing():
    import model_signing

    return model_signing.hashing.Config().set_ignored_paths(paths=[SIG_FILE], ignore_git_paths=False)


def sign_bundle(root: Path, signer: Signer) -> Path:
    """model-signing reads the key from a PEM file: it gets a copy encrypted under a one-time password in
    an owner-only temporary folder, removed right after (the stored key file is scrypt-sealed)."""
    import os
    import secrets

    import model_signing
    from cryptography.hazmat.primitives import serialization

    sig = root / SIG_FILE
    once = secrets.token_bytes(32)
    with tempfile.TemporaryDirectory() as d:
        pem = Path(d) / "key.pem"
        fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(signer.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.BestAvailableEncryption(once)))
        (model_signing.signing.Config().set_hashing_config(_hashing())
         .use_elliptic_key_signer(private_key=pem, password=once).sign(root, sig))
    return sig


def verify_signature(root: Path, public_pem: str) -> str:
    """'' when `model.sig` verifies with `public_pem` over exactly the bundle's files, else why not."""
    import model_signing

    sig = root / SIG_FILE
    if not sig.is_file():
        return f"{SIG_FILE} is missing"
    with tempfile.TemporaryDirectory() as d:
        pub = Path(d) / "key.pub.pem"
        pub.write_text(public_pem)
        try:
            (model_signing.verifying.Config().set_hashing_config(_hashing())
             .use_elliptic_key_verifier(public_key=pub).verify(root, sig))
        except Exception as e:  # model-signing reports every mismatch as an exception with its reason
            return f"{SIG_FILE} does not verify: {str(e)[:400]}"
    return ""


def tensor_digests(root: Path) -> dict[str, str]:
    """sha256 of every tensor (dtype, shape and raw bytes) in the bundle's top-level safetensors files."""
    import torch
    from safetensors import safe_open

    out = {}
    for f in sorted(root.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as h:
                for name in h.keys():
                    t = h.get_tensor(name).contiguous()
                    d = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
                    d.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
                    out[name] = d.hexdigest()
        except Exception as e:  # a damaged weights file is a finding, not a crash
            raise TicketLabError(f"{f.name} cannot be read as safetensors ({e}).") from e
    return out
