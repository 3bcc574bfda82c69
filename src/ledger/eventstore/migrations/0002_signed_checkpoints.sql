-- Checkpoints signed with Ed25519 by a key outside the database (audit/checkpoints.py, issue 14): each
-- checkpoint's Merkle root over its rows' digests, when and by which key it was signed, and the signature;
-- each sealed row's keyed tag.
ALTER TABLE audit_checkpoints
    ADD COLUMN IF NOT EXISTS root text,
    ADD COLUMN IF NOT EXISTS signed_at timestamptz,
    ADD COLUMN IF NOT EXISTS key_id text,
    ADD COLUMN IF NOT EXISTS signature text;
ALTER TABLE audit_checkpoint_events ADD COLUMN IF NOT EXISTS row_tag bytea;
-- The checkpoints written before are unsigned: whoever can write the database could have written them, so
-- they prove nothing, and their digests are of the old form. They go; the worker re-seals the log, signed,
-- from its first event.
DELETE FROM audit_checkpoint_events WHERE seq IN (SELECT seq FROM audit_checkpoints WHERE signature IS NULL);
DELETE FROM audit_checkpoints WHERE signature IS NULL;
