-- The web page's sign-in sessions (eventstore/web_sessions.py): the SHA-256 of the session id (the cookie holds
-- the id itself), the API key and seller it acts for, and its absolute expiry.
CREATE TABLE IF NOT EXISTS web_sessions (
    id_hash text PRIMARY KEY,
    key_id uuid NOT NULL,
    seller text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    last_seen timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS web_sessions_expires_at ON web_sessions (expires_at);
