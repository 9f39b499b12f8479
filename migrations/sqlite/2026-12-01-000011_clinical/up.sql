-- The patient's clinical context: immutable numbered versions, like the plan.
-- `content` is the context as JSON; `provenance` names, per known field,
-- who recorded its current value and when.
CREATE TABLE clinical_contexts (
    id TEXT PRIMARY KEY NOT NULL,
    patient_id TEXT NOT NULL REFERENCES patients (id),
    version INTEGER NOT NULL,
    content TEXT NOT NULL,
    provenance TEXT NOT NULL,
    author_id TEXT NOT NULL REFERENCES users (id),
    created_at TIMESTAMP NOT NULL,
    UNIQUE (patient_id, version)
);

-- A pharmacist's structured intervention on a plan version (its OMT or one line).
CREATE TABLE interventions (
    id TEXT PRIMARY KEY NOT NULL,
    patient_id TEXT NOT NULL REFERENCES patients (id),
    plan_version INTEGER NOT NULL,
    line_index INTEGER,
    drug TEXT NOT NULL,
    problem TEXT NOT NULL,
    proposed_action TEXT NOT NULL,
    note TEXT,
    author_id TEXT NOT NULL REFERENCES users (id),
    addressee_id TEXT NOT NULL REFERENCES users (id),
    status TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    decided_at TIMESTAMP,
    resolved_by_version INTEGER,
    comment TEXT
);
CREATE INDEX interventions_patient ON interventions (patient_id, id);
CREATE INDEX interventions_addressee ON interventions (addressee_id, status);

-- What the pharmacy handed out: the OMT (line_index NULL) or one line.
CREATE TABLE dispensations (
    id TEXT PRIMARY KEY NOT NULL,
    patient_id TEXT NOT NULL REFERENCES patients (id),
    line_index INTEGER,
    drug TEXT NOT NULL,
    dose_mg REAL NOT NULL,
    days_supply INTEGER NOT NULL,
    dispensed_on DATE NOT NULL,
    early_refill BOOLEAN NOT NULL,
    author_id TEXT NOT NULL REFERENCES users (id),
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX dispensations_patient ON dispensations (patient_id, drug, dispensed_on);

-- The day-before reminders of a temporary change's end, each claimed once:
-- (patient, what ends, the day it ends).
CREATE TABLE end_reminders (
    patient_id TEXT NOT NULL REFERENCES patients (id),
    subject TEXT NOT NULL,
    ends_on DATE NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (patient_id, subject, ends_on)
);
