ALTER TABLE outcomes ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE subjects ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
CREATE INDEX outcomes_tenant ON outcomes (tenant, seq);
CREATE INDEX subjects_subject ON subjects (subject_id, tenant);
