CREATE TABLE subjects_v5 (
    target TEXT NOT NULL,
    tenant TEXT NOT NULL,
    subject_kind INTEGER NOT NULL,
    subject_id TEXT NOT NULL,
    desired_version INTEGER NOT NULL DEFAULT 0,
    desired_event_id TEXT NOT NULL DEFAULT '',
    desired BLOB,
    desired_at_ms INTEGER NOT NULL DEFAULT 0,
    applied_version INTEGER NOT NULL DEFAULT 0,
    applied_event_id TEXT NOT NULL DEFAULT '',
    applied BLOB,
    applied_at_ms INTEGER NOT NULL DEFAULT 0,
    remote_id TEXT NOT NULL DEFAULT '',
    fingerprint INTEGER NOT NULL DEFAULT 0,
    presence INTEGER NOT NULL DEFAULT 0,
    members BLOB,
    last_operation TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT '',
    updated_at_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (target, tenant, subject_kind, subject_id)
);
INSERT INTO subjects_v5 (target, tenant, subject_kind, subject_id, desired_version, applied_version,
        applied_at_ms, remote_id, presence, last_operation, last_error, updated_at_ms)
    SELECT target, tenant, subject_kind, subject_id, applied_version, applied_version, updated_at_ms,
        remote_id,
        CASE WHEN state = 'error' THEN 0 WHEN remote_id = '' OR state = 'deleted' THEN 3
             WHEN state = 'deactivated' THEN 2 ELSE 1 END,
        CASE WHEN state = 'error' THEN '' ELSE state END,
        last_error, updated_at_ms
    FROM subjects;
DROP TABLE subjects;
ALTER TABLE subjects_v5 RENAME TO subjects;
CREATE INDEX subjects_subject ON subjects (subject_id, tenant);
CREATE INDEX subjects_presence ON subjects (target, subject_kind, presence);
CREATE TABLE outcomes_v5 (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL DEFAULT '',
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    result INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    finished_at_ms INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL DEFAULT 0,
    duplicate INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL,
    UNIQUE (tenant, event_id, target, result, attempt, finished_at_ms)
);
INSERT INTO outcomes_v5 (seq, tenant, event_id, target, subject_id, result, attempt, finished_at_ms,
        recorded_at_ms, latency_ms, duplicate, body)
    SELECT seq, tenant, event_id, target, subject_id, result, attempt, finished_at_ms,
        recorded_at_ms, latency_ms, duplicate, body FROM outcomes;
DROP TABLE outcomes;
ALTER TABLE outcomes_v5 RENAME TO outcomes;
CREATE INDEX outcomes_event ON outcomes (event_id);
CREATE INDEX outcomes_target ON outcomes (target, seq);
CREATE INDEX outcomes_subject ON outcomes (subject_id, seq);
CREATE INDEX outcomes_recorded ON outcomes (recorded_at_ms);
CREATE INDEX outcomes_tenant ON outcomes (tenant, seq);
CREATE TABLE terminals_v5 (
    tenant TEXT NOT NULL DEFAULT '',
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, event_id, target)
);
INSERT INTO terminals_v5 (tenant, event_id, target, seq)
    SELECT COALESCE(o.tenant, ''), t.event_id, t.target, t.seq
    FROM terminals t LEFT JOIN outcomes o ON o.seq = t.seq;
DROP TABLE terminals;
ALTER TABLE terminals_v5 RENAME TO terminals;
CREATE INDEX terminals_seq ON terminals (seq);
CREATE TABLE held_v5 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL DEFAULT '',
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    held_at_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (tenant, event_id, target)
);
INSERT INTO held_v5 (id, event_id, target, held_at_ms, body)
    SELECT id, event_id, target, held_at_ms, body FROM held;
DROP TABLE held;
ALTER TABLE held_v5 RENAME TO held;
CREATE INDEX held_target ON held (target, id);
CREATE TABLE deprovisions_v5 (
    target TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT '',
    subject_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    admitted_at_ms INTEGER NOT NULL,
    PRIMARY KEY (target, tenant, subject_id)
);
INSERT INTO deprovisions_v5 (target, subject_id, event_id, admitted_at_ms)
    SELECT target, subject_id, event_id, admitted_at_ms FROM deprovisions;
DROP TABLE deprovisions;
ALTER TABLE deprovisions_v5 RENAME TO deprovisions;
CREATE INDEX deprovisions_window ON deprovisions (target, admitted_at_ms)
