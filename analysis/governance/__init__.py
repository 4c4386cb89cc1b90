"""Governance: review policies, tamper-evident decisions, the deployment pointer, verified export bundles
and the HTML scorecard. Everything is recorded in the ledger (schema migration 2)."""
