CREATE TABLE outcomes (
    seq BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    result BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    finished_at_ms BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL DEFAULT 0,
    duplicate BIGINT NOT NULL DEFAULT 0,
    body BYTEA NOT NULL,
    UNIQUE (event_id, target, result, attempt, finished_at_ms)
);
CREATE INDEX outcomes_event ON outcomes (event_id);
CREATE INDEX outcomes_target ON outcomes (target, seq);
CREATE INDEX outcomes_subject ON outcomes (subject_id, seq);
CREATE INDEX outcomes_recorded ON outcomes (recorded_at_ms);
CREATE TABLE subjects (
    target TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    subject_kind BIGINT NOT NULL,
    remote_id TEXT NOT NULL,
    applied_version BIGINT NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (target, subject_id)
);
CREATE TABLE terminals (
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (event_id, target)
);
CREATE INDEX terminals_seq ON terminals (seq);
CREATE TABLE target_counts (
    target TEXT NOT NULL,
    result BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (target, result)
);
CREATE TABLE targets (
    target TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    last_outcome_at_ms BIGINT NOT NULL
);
CREATE TABLE target_reports (
    target TEXT NOT NULL,
    replica TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (target, replica)
);
CREATE TABLE held (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    held_at_ms BIGINT NOT NULL,
    body BYTEA NOT NULL,
    UNIQUE (event_id, target)
);
CREATE INDEX held_target ON held (target, id);
