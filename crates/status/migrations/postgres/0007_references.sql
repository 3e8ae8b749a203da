CREATE TABLE refs (
    target TEXT NOT NULL,
    tenant TEXT NOT NULL,
    referrer_kind BIGINT NOT NULL,
    referrer_id TEXT NOT NULL,
    ref_kind BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    dropped TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (target, tenant, referrer_kind, referrer_id, ref_kind, user_id)
);
CREATE INDEX refs_user ON refs (target, tenant, user_id);
ALTER TABLE subjects ADD COLUMN retrigger_until_ms BIGINT NOT NULL DEFAULT 0
