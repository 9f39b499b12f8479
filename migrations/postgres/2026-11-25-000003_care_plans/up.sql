-- The current version of each patient's plan: the row writers compare-and-swap.
CREATE TABLE care_plans (
    patient_id TEXT PRIMARY KEY NOT NULL REFERENCES patients (id),
    current_version INTEGER NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- Every version, immutable.
CREATE TABLE care_plan_versions (
    id TEXT PRIMARY KEY NOT NULL,
    patient_id TEXT NOT NULL REFERENCES patients (id),
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    content TEXT NOT NULL,
    warnings TEXT NOT NULL,
    acknowledged TEXT NOT NULL,
    change_summary TEXT NOT NULL,
    source_type TEXT,
    source_id TEXT,
    author_id TEXT NOT NULL REFERENCES users (id),
    created_at TIMESTAMP NOT NULL,
    UNIQUE (patient_id, version)
);

CREATE TABLE observations (
    id TEXT PRIMARY KEY NOT NULL,
    patient_id TEXT NOT NULL REFERENCES patients (id),
    author_id TEXT NOT NULL REFERENCES users (id),
    pain_score INTEGER,
    sedation_score INTEGER,
    cows_score INTEGER,
    dose_dispensed_mg DOUBLE PRECISION,
    note TEXT,
    recorded_at TIMESTAMP NOT NULL
);
CREATE INDEX observations_patient ON observations (patient_id, recorded_at);

-- Destabilisation episodes: open from the alert until the measure is back under its threshold.
CREATE TABLE observation_alerts (
    id TEXT PRIMARY KEY NOT NULL,
    patient_id TEXT NOT NULL REFERENCES patients (id),
    kind TEXT NOT NULL,
    opened_at TIMESTAMP NOT NULL,
    closed_at TIMESTAMP
);
CREATE INDEX observation_alerts_open ON observation_alerts (patient_id, kind, closed_at);
