ALTER TABLE outcomes ADD COLUMN latency_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outcomes ADD COLUMN duplicate INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outcomes_recorded ON outcomes (recorded_at_ms);
CREATE TABLE terminals (
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (event_id, target)
);
CREATE INDEX terminals_seq ON terminals (seq);
INSERT OR IGNORE INTO terminals (event_id, target, seq)
    SELECT event_id, target, MIN(seq) FROM outcomes WHERE event_id <> '' AND result <> 0 GROUP BY event_id, target;
UPDATE outcomes SET duplicate = 1
    WHERE result <> 0 AND event_id <> '' AND seq NOT IN (SELECT seq FROM terminals);
CREATE TABLE target_counts (
    target TEXT NOT NULL,
    result INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (target, result)
);
INSERT INTO target_counts (target, result, count)
    SELECT target, result, COUNT(*) FROM outcomes WHERE duplicate = 0 AND result <> 0 GROUP BY target, result;
CREATE TABLE targets (
    target TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    last_outcome_at_ms INTEGER NOT NULL
);
INSERT OR IGNORE INTO targets (target, provider, last_outcome_at_ms)
    SELECT target, '', MAX(recorded_at_ms) FROM outcomes GROUP BY target;
CREATE TABLE target_reports (
    target TEXT NOT NULL,
    replica TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (target, replica)
);
CREATE TABLE held (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    held_at_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (event_id, target)
);
CREATE INDEX held_target ON held (target, id);
