"""Governance: signed identities and roles, a policy pinned in the ledger, signed decisions and deployment
moves in one chain anchored by a witness log, signed export bundles and the HTML scorecard. The read model
is `state.py`; every write goes through `records.write` (schema migration 3)."""
