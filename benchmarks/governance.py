"""Cost of trust: `audit` and one signed write as the governance log grows, OpenSSF model-signing
over a bundle-sized folder, and unlocking a private key at the default scrypt cost.

    python -m benchmarks.governance [--records 100,1000] [--bundle-mib 512]

Everything runs in a temporary state folder with its own keys; nothing of the user's is touched.
`TICKETLAB_BENCH_QUICK=1` shrinks it to a smoke run (100 records, 16 MiB).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def _audit_costs(root: Path, sizes: list[int]) -> None:
    from analysis.governance import admin, audit, chain, keys, state, witness
    from analysis.ledger import Ledger

    keys.generate("ada", "ada-passphrase")
    ada = keys.unlock("ada", "ada-passphrase")
    ledger = Ledger(root / "ledger.duckdb")
    admin.init_ledger(ledger, ada)
    for n in sizes:
        have = len(state.load(ledger).rows)
        # bulk appends through the chain itself (signed and linked), so the audit has real work to do
        with ledger.transaction() as con:
            rows = [chain.append(con, ada, "roles", {"name": "ada", "roles": ["admin"]}, "ada")
                    for _ in range(max(0, n - have))]
        st = state.load(ledger)
        witness.append(witness.path_for(ledger), [witness.signed_head(ada, st.ledger_id, r) for r in rows])
        start = time.perf_counter()
        report = audit.audit(ledger)
        audit_s = time.perf_counter() - start
        start = time.perf_counter()
        admin.set_roles(ledger, ada, "ada", add=["reviewer"])
        write_s = time.perf_counter() - start
        print(f"{n:>6} records: audit {audit_s * 1000:6.0f} ms (ok={report['ok']}), "
              f"one signed write incl. its audit {write_s * 1000:6.0f} ms", flush=True)


def _signing_costs(root: Path, mib: int) -> None:
    from analysis.governance import keys, signing

    bundle = root / "bundle"
    bundle.mkdir()
    chunk = os.urandom(1 << 20)
    with open(bundle / "model.safetensors", "wb") as f:
        for _ in range(mib):
            f.write(chunk)
    (bundle / "manifest.json").write_text("{}")
    keys.generate("alice", "alice-passphrase")
    alice = keys.unlock("alice", "alice-passphrase")
    start = time.perf_counter()
    signing.sign_bundle(bundle, alice)
    sign_s = time.perf_counter() - start
    start = time.perf_counter()
    problem = signing.verify_signature(bundle, alice.public_pem)
    verify_s = time.perf_counter() - start
    print(f"{mib} MiB bundle: sign {sign_s:.2f} s, verify {verify_s:.2f} s (problem: {problem or 'none'})", flush=True)


def _kdf_costs(root: Path, runs: int = 3) -> None:
    """What one passphrase guess costs whoever copied a key file: one unlock at the default scrypt cost."""
    from analysis.governance import keyfile, keys

    saved = os.environ.pop(keyfile.COST_ENV, None)
    try:
        start = time.perf_counter()
        path, _ = keys.generate("kdf", "kdf-bench-passphrase")
        make_s = time.perf_counter() - start
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            keys.unlock("kdf", "kdf-bench-passphrase")
            times.append(time.perf_counter() - start)
        print(f"key at scrypt N=2^{keyfile.cost(path.read_bytes())}, r={keyfile.R}: make {make_s:.2f} s, unlock "
              f"{' / '.join(f'{t:.2f}' for t in times)} s", flush=True)
    finally:
        if saved is not None:
            os.environ[keyfile.COST_ENV] = saved


def main(argv: list[str] | None = None) -> int:
    quick = os.environ.get("TICKETLAB_BENCH_QUICK") == "1"
    p = argparse.ArgumentParser(prog="python -m benchmarks.governance", description=__doc__.split("\n\n")[0])
    p.add_argument("--records", default="100" if quick else "100,1000")
    p.add_argument("--bundle-mib", type=int, default=16 if quick else 512)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["TICKETLAB_STATE_DIR"] = str(root)
        os.environ["TICKETLAB_KEY_DIR"] = str(root / "keys")
        _kdf_costs(root)
        _audit_costs(root, [int(x) for x in args.records.split(",")])
        _signing_costs(root, args.bundle_mib)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
