"""The ledger's versioned schema. Each migration is applied in order, in one transaction, and bumps
`schema_version`. Append new migrations at the end; never edit one that has shipped."""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: models, tickets, runs, metrics, survival, samples, experiments
    """
    CREATE TABLE models (
        weights_sha256 VARCHAR PRIMARY KEY, spec VARCHAR NOT NULL, family VARCHAR, model_type VARCHAR,
        n_params BIGINT, config JSON, added_at TIMESTAMP DEFAULT current_timestamp);
    CREATE TABLE tickets (
        id VARCHAR PRIMARY KEY, content_sha256 VARCHAR NOT NULL, name VARCHAR, dense_sha256 VARCHAR NOT NULL,
        method VARCHAR NOT NULL, params JSON, target_sparsity DOUBLE, achieved_sparsity DOUBLE, seed INTEGER,
        calibration JSON, parent VARCHAR, lineage JSON, structure JSON, experiment VARCHAR, path VARCHAR,
        created_at TIMESTAMP, recorded_at TIMESTAMP DEFAULT current_timestamp);
    CREATE TABLE runs (
        id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, command VARCHAR, subject VARCHAR, dense_sha256 VARCHAR,
        status VARCHAR NOT NULL, started_at TIMESTAMP, ended_at TIMESTAMP, error VARCHAR, params JSON,
        machine JSON, pid INTEGER, host VARCHAR);
    CREATE TABLE metrics (
        run_id VARCHAR NOT NULL, subject VARCHAR NOT NULL, dense_sha256 VARCHAR, suite VARCHAR NOT NULL,
        task VARCHAR NOT NULL, metric VARCHAR NOT NULL, value DOUBLE, stderr DOUBLE, direction VARCHAR,
        ideal DOUBLE, n_samples INTEGER, "limit" INTEGER, batch_size VARCHAR, dtype VARCHAR, padding VARCHAR,
        extra JSON, recorded_at TIMESTAMP DEFAULT current_timestamp);
    CREATE TABLE survival_layer (
        ticket_id VARCHAR NOT NULL, layer INTEGER NOT NULL, matrix VARCHAR NOT NULL, kept BIGINT, total BIGINT);
    CREATE TABLE survival_head (
        ticket_id VARCHAR NOT NULL, layer INTEGER NOT NULL, head INTEGER NOT NULL, kind VARCHAR NOT NULL,
        kept BIGINT, total BIGINT);
    CREATE TABLE survival_neuron (
        ticket_id VARCHAR NOT NULL, layer INTEGER NOT NULL, band INTEGER NOT NULL, band_start INTEGER,
        band_stop INTEGER, kept BIGINT, total BIGINT);
    CREATE TABLE eval_samples (
        run_id VARCHAR NOT NULL, subject VARCHAR NOT NULL, task VARCHAR NOT NULL, doc_id INTEGER, data JSON);
    CREATE TABLE experiments (
        id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, params JSON, status VARCHAR,
        created_at TIMESTAMP DEFAULT current_timestamp, summary JSON);
    CREATE TABLE attribution_head (
        run_id VARCHAR NOT NULL, subject VARCHAR NOT NULL, layer INTEGER NOT NULL, head INTEGER NOT NULL,
        value DOUBLE, abs_value DOUBLE, n_pairs INTEGER);
    """,
    # 2: governance. decisions and deployments are append-only hash chains (each row_hash covers the row's
    # canonical content and the previous row's hash), so an edit or a deletion is found by `ticketlab audit`.
    """
    CREATE TABLE ticket_meta (
        ticket_id VARCHAR PRIMARY KEY, created_by VARCHAR NOT NULL, host VARCHAR,
        recorded_at TIMESTAMP DEFAULT current_timestamp);
    CREATE TABLE decisions (
        seq BIGINT PRIMARY KEY, ticket_id VARCHAR NOT NULL, dense_sha256 VARCHAR NOT NULL,
        decision VARCHAR NOT NULL CHECK (decision IN ('approve', 'reject')), reviewer VARCHAR NOT NULL,
        reason VARCHAR NOT NULL, override BOOLEAN NOT NULL, override_reason VARCHAR, baseline VARCHAR,
        policy_name VARCHAR, policy_sha256 VARCHAR NOT NULL, policy_results JSON NOT NULL, passed BOOLEAN NOT NULL,
        decided_at TIMESTAMP NOT NULL, prev_hash VARCHAR NOT NULL, row_hash VARCHAR NOT NULL);
    CREATE TABLE deployments (
        seq BIGINT PRIMARY KEY, dense_sha256 VARCHAR NOT NULL,
        action VARCHAR NOT NULL CHECK (action IN ('promote', 'rollback')), target VARCHAR NOT NULL,
        previous VARCHAR NOT NULL, by_user VARCHAR NOT NULL, reason VARCHAR NOT NULL, decision_hash VARCHAR,
        moved_at TIMESTAMP NOT NULL, prev_hash VARCHAR NOT NULL, row_hash VARCHAR NOT NULL);
    """,
    # 3: signed governance. One chain of records, each signed by its actor's key (analysis/governance/chain.py).
    # The unsigned tables of migration 2 are kept, renamed legacy_*, as unsigned history: anyone could have
    # written them, so they no longer decide a ticket's state.
    """
    ALTER TABLE decisions RENAME TO legacy_decisions;
    ALTER TABLE deployments RENAME TO legacy_deployments;
    ALTER TABLE ticket_meta RENAME TO legacy_ticket_meta;
    CREATE TABLE governance_log (
        seq BIGINT PRIMARY KEY, kind VARCHAR NOT NULL, actor VARCHAR NOT NULL, key_id VARCHAR NOT NULL,
        subject VARCHAR, body VARCHAR NOT NULL, signed_at TIMESTAMP NOT NULL, prev_hash VARCHAR NOT NULL,
        row_hash VARCHAR NOT NULL, signature VARCHAR NOT NULL);
    """,
]

CURRENT_VERSION = len(MIGRATIONS)
