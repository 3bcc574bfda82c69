-- The tables release 0.1.0 created on first use, as it created them. IF NOT EXISTS throughout: a schema that
-- release used has some of them already (each was made by the first process that needed it).

-- Projections: per projection and generation, how far the tables are complete and which generation is live
-- (projections/base.py; the generation tables themselves are the projections' own).
CREATE TABLE IF NOT EXISTS projection_state (
    name text NOT NULL,
    generation integer NOT NULL,
    position bigint NOT NULL DEFAULT 0,
    active boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, generation)
);
CREATE UNIQUE INDEX IF NOT EXISTS projection_state_one_active ON projection_state (name) WHERE active;

-- Stored responses under idempotency keys (eventstore/idempotency.py).
CREATE TABLE IF NOT EXISTS ledger_idempotency (
    seller text NOT NULL, key text NOT NULL, operation text NOT NULL, digest text NOT NULL,
    status integer NOT NULL, body bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (seller, key)
);

-- Buyers' keys for crypto-shredding (eventstore/keys_store.py).
CREATE TABLE IF NOT EXISTS personal_data_keys (
    key_id text PRIMARY KEY,
    key bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz
);

-- Signed checkpoints over the events (audit/verification.py).
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq integer PRIMARY KEY,
    first_id bigint NOT NULL,
    last_id bigint NOT NULL,
    row_count integer NOT NULL,
    prev_digest text NOT NULL,
    digest text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS audit_checkpoint_events (
    notification_id bigint PRIMARY KEY,
    seq integer NOT NULL,
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    row_digest bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_checkpoint_events_originator
    ON audit_checkpoint_events (originator_id, originator_version);

-- The importer's cursors and what it imported (integrations/importer.py).
CREATE TABLE IF NOT EXISTS integration_cursors (
    account_id uuid PRIMARY KEY, marketplace text NOT NULL, updated_after timestamptz NOT NULL,
    last_round_at timestamptz, last_error text, updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS integration_accounts (
    account_id uuid PRIMARY KEY, marketplace text NOT NULL, registered_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS integration_orders (
    account_id uuid NOT NULL, marketplace_order_id text NOT NULL, order_id uuid NOT NULL,
    remote_updated_at timestamptz NOT NULL, imported_at timestamptz NOT NULL DEFAULT now(),
    acknowledged_at timestamptz, PRIMARY KEY (account_id, marketplace_order_id)
);
CREATE INDEX IF NOT EXISTS integration_orders_recent ON integration_orders (account_id, remote_updated_at DESC);
CREATE TABLE IF NOT EXISTS integration_state (name text PRIMARY KEY, position bigint NOT NULL);

-- Settlement reconciliation runs (finance/reconcile.py).
CREATE TABLE IF NOT EXISTS finance_reconciliations (
    reconciliation_id uuid PRIMARY KEY, seller text NOT NULL, marketplace text NOT NULL, account_id uuid,
    created_at timestamptz NOT NULL, created_by text NOT NULL, source text NOT NULL, file_name text NOT NULL,
    file_size bigint NOT NULL, file_sha256 text NOT NULL, format text NOT NULL, settlement_id text,
    currency text NOT NULL, period_start timestamptz NOT NULL, period_end timestamptz NOT NULL,
    total_amount numeric, rows integer NOT NULL, ignored_rows integer NOT NULL, bad_rows integer NOT NULL,
    matched integer NOT NULL, missing_in_marketplace integer NOT NULL, missing_in_ledger integer NOT NULL,
    amount_differs integer NOT NULL, idempotency_key text, request_digest text
);
CREATE UNIQUE INDEX IF NOT EXISTS finance_reconciliations_key
    ON finance_reconciliations (seller, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS finance_reconciliations_newest
    ON finance_reconciliations (seller, created_at DESC, reconciliation_id DESC);
CREATE TABLE IF NOT EXISTS finance_reconciliation_items (
    reconciliation_id uuid NOT NULL REFERENCES finance_reconciliations ON DELETE CASCADE,
    seq integer NOT NULL, kind text NOT NULL, outcome text NOT NULL, marketplace_order_id text NOT NULL,
    order_id uuid, currency text NOT NULL, ledger_amount numeric, marketplace_amount numeric,
    report_lines integer[] NOT NULL, PRIMARY KEY (reconciliation_id, seq)
);
CREATE TABLE IF NOT EXISTS finance_reconciliation_bad_rows (
    reconciliation_id uuid NOT NULL REFERENCES finance_reconciliations ON DELETE CASCADE,
    seq integer NOT NULL, line integer NOT NULL, message text NOT NULL, field text NOT NULL,
    PRIMARY KEY (reconciliation_id, seq)
);
