CREATE TABLE outcomes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    result INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    finished_at_ms INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (event_id, target, result, attempt, finished_at_ms)
);
CREATE INDEX outcomes_event ON outcomes (event_id);
CREATE INDEX outcomes_target ON outcomes (target, seq);
CREATE INDEX outcomes_subject ON outcomes (subject_id, seq);
CREATE TABLE subjects (
    target TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    subject_kind INTEGER NOT NULL,
    remote_id TEXT NOT NULL,
    applied_version INTEGER NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (target, subject_id)
);
