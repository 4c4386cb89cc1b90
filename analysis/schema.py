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
]

CURRENT_VERSION = len(MIGRATIONS)
