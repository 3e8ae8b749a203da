ALTER TABLE subjects ADD COLUMN desired_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subjects ADD COLUMN desired_event_id TEXT NOT NULL DEFAULT '';
ALTER TABLE subjects ADD COLUMN desired BYTEA;
ALTER TABLE subjects ADD COLUMN desired_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subjects ADD COLUMN applied_event_id TEXT NOT NULL DEFAULT '';
ALTER TABLE subjects ADD COLUMN applied BYTEA;
ALTER TABLE subjects ADD COLUMN applied_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subjects ADD COLUMN fingerprint BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subjects ADD COLUMN presence BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subjects ADD COLUMN members BYTEA;
ALTER TABLE subjects ADD COLUMN last_operation TEXT NOT NULL DEFAULT '';
UPDATE subjects SET desired_version = applied_version, applied_at_ms = updated_at_ms,
    presence = CASE WHEN state = 'error' THEN 0 WHEN remote_id = '' OR state = 'deleted' THEN 3
                    WHEN state = 'deactivated' THEN 2 ELSE 1 END,
    last_operation = CASE WHEN state = 'error' THEN '' ELSE state END;
ALTER TABLE subjects DROP COLUMN state;
ALTER TABLE subjects ALTER COLUMN remote_id SET DEFAULT '';
ALTER TABLE subjects ALTER COLUMN applied_version SET DEFAULT 0;
ALTER TABLE subjects ALTER COLUMN last_error SET DEFAULT '';
ALTER TABLE subjects ALTER COLUMN updated_at_ms SET DEFAULT 0;
ALTER TABLE subjects DROP CONSTRAINT subjects_pkey;
ALTER TABLE subjects ADD PRIMARY KEY (target, tenant, subject_kind, subject_id);
CREATE INDEX subjects_presence ON subjects (target, subject_kind, presence);
ALTER TABLE outcomes DROP CONSTRAINT IF EXISTS outcomes_event_id_target_result_attempt_finished_at_ms_key;
CREATE UNIQUE INDEX outcomes_unique ON outcomes (tenant, event_id, target, result, attempt, finished_at_ms);
ALTER TABLE terminals ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
UPDATE terminals SET tenant = o.tenant FROM outcomes o WHERE o.seq = terminals.seq;
ALTER TABLE terminals DROP CONSTRAINT terminals_pkey;
ALTER TABLE terminals ADD PRIMARY KEY (tenant, event_id, target);
ALTER TABLE held ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE held DROP CONSTRAINT IF EXISTS held_event_id_target_key;
CREATE UNIQUE INDEX held_unique ON held (tenant, event_id, target);
ALTER TABLE deprovisions ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE deprovisions DROP CONSTRAINT deprovisions_pkey;
ALTER TABLE deprovisions ADD PRIMARY KEY (target, tenant, subject_id)
