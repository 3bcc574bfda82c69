-- Webhooks and their delivery log (feed/webhooks.py, issue 15). Each webhook keeps a cursor into the change
-- feed (`position`: its seller's events up to there are delivered or dead) and the state of its next event;
-- every attempt is a row of webhook_deliveries. The feed's index is the `feed` projection's (feed/index.py).
CREATE TABLE IF NOT EXISTS webhooks (
    webhook_id uuid PRIMARY KEY,
    seller text NOT NULL,
    url text NOT NULL,
    types text[] NOT NULL DEFAULT '{}',
    description text,
    secret text NOT NULL,
    created_at timestamptz NOT NULL,
    position bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    first_failed_at timestamptz,
    next_attempt_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_seller ON webhooks (seller, created_at);
CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks (next_attempt_at);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id bigserial PRIMARY KEY,
    webhook_id uuid NOT NULL REFERENCES webhooks ON DELETE CASCADE,
    position bigint,
    event_id uuid NOT NULL,
    event_type text NOT NULL,
    attempt integer NOT NULL,
    attempted_at timestamptz NOT NULL,
    status_code integer,
    error text,
    duration_ms integer NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'dead'))
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, delivery_id);
