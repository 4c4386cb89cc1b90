"""Personal keys: encrypted at rest, owner-only, unlocked only with the right passphrase."""

import stat

import pytest

from analysis.governance import keys
from app.cli import main
from pruning.errors import TicketLabError


@pytest.fixture
def key_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TICKETLAB_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.delenv("TICKETLAB_PASSPHRASE", raising=False)
    return tmp_path / "keys"


def test_key_is_encrypted_owner_only_and_signs(key_dir):
    path, pem = keys.generate("alice", "alice-passphrase")
    assert path == key_dir / "alice.key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert b"scrypt" in path.read_bytes() and b"PRIVATE KEY" not in path.read_bytes()
    signer = keys.unlock("alice", "alice-passphrase")
    assert signer.key_id == keys.fingerprint(pem) == keys.fingerprint((key_dir / "alice.pub.pem").read_text())
    sig = signer.sign(b"record")
    assert keys.verify(pem, b"record", sig) and not keys.verify(pem, b"recorc", sig)
    other = keys.generate("bob", "bob-passphrase")[1]
    assert not keys.verify(other, b"record", sig)


def test_bad_key_input_is_one_clear_error(key_dir, monkeypatch):
    keys.generate("alice", "alice-passphrase")
    with pytest.raises(TicketLabError, match="wrong passphrase for alice's key"):
        keys.unlock("alice", "not-her-passphrase")
    with pytest.raises(TicketLabError, match="no private key for mallory"):
        keys.unlock("mallory", "whatever-passphrase")
    with pytest.raises(TicketLabError, match="already exists"):
        keys.generate("alice", "another-passphrase")
    for weak, why in (("short", "at least 12 characters"), ("aaaaaaaaaaaaaaaa", "6 different characters"),
                      ("abcdefabcdefabcdef", "one short pattern repeated")):
        with pytest.raises(TicketLabError, match=why):
            keys.generate("carol", weak)
    with pytest.raises(TicketLabError, match="not a usable person name"):
        keys.generate("../evil", "long-enough-passphrase")
    (key_dir / "alice.key.pem").chmod(0o644)
    with pytest.raises(TicketLabError, match="can be read by other users"):
        keys.unlock("alice", "alice-passphrase")
    # automation: the passphrase from the environment; without it and without a terminal, a clear refusal
    (key_dir / "alice.key.pem").chmod(0o600)
    with pytest.raises(TicketLabError, match="set \\$TICKETLAB_PASSPHRASE"):
        keys.unlock("alice")
    monkeypatch.setenv("TICKETLAB_PASSPHRASE", "alice-passphrase")
    assert keys.unlock("alice").name == "alice"


def test_keygen_command(key_dir, state, monkeypatch, capsys):
    monkeypatch.setenv("TICKETLAB_PASSPHRASE", "carol-passphrase")
    assert main(["keygen", "carol"]) == 0
    assert "carol.pub.pem" in capsys.readouterr().out
    assert main(["keygen", "carol"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_the_default_kdf_is_scrypt_at_full_cost(key_dir, monkeypatch):
    """The suite lowers the cost with $TICKETLAB_KDF_LOG2N; without it a key is sealed at N = 2^17 (128 MiB)."""
    from analysis.governance import keyfile

    monkeypatch.delenv(keyfile.COST_ENV, raising=False)
    assert keyfile.log2n() == keyfile.DEFAULT_LOG2N == 17 and (keyfile.R, keyfile.P) == (8, 1)
    path, pem = keys.generate("alice", "alice-passphrase")
    assert keyfile.cost(path.read_bytes()) == 17
    assert keys.unlock("alice", "alice-passphrase").key_id == keys.fingerprint(pem)


def test_a_key_in_the_old_pbkdf2_format_opens_and_is_sealed_again(key_dir):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from analysis.governance import keyfile

    key = ec.generate_private_key(ec.SECP256R1())
    key_dir.mkdir(mode=0o700)
    old = key_dir / "bob.key.pem"
    old.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"bob-passphrase-x")))
    old.chmod(0o600)
    assert keyfile.cost(old.read_bytes()) is None
    assert keys.unlock("bob", "bob-passphrase-x").key.private_numbers() == key.private_numbers()
    assert keyfile.cost(old.read_bytes()) == keyfile.log2n() and keys.unlock("bob", "bob-passphrase-x")
