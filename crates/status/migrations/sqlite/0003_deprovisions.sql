CREATE TABLE deprovisions (
    target TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    admitted_at_ms INTEGER NOT NULL,
    PRIMARY KEY (target, subject_id)
);
CREATE INDEX deprovisions_window ON deprovisions (target, admitted_at_ms);
