CREATE TABLE handovers (
    id TEXT PRIMARY KEY NOT NULL,
    patient_id TEXT NOT NULL REFERENCES patients (id),
    from_user_id TEXT NOT NULL REFERENCES users (id),
    to_user_id TEXT NOT NULL REFERENCES users (id),
    summary TEXT NOT NULL,
    discharge_date DATE NOT NULL,
    follow_up TEXT,
    proposed_plan TEXT NOT NULL,
    base_plan_version INTEGER,
    status TEXT NOT NULL,
    due_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    acknowledged_at TIMESTAMP,
    reconciled_at TIMESTAMP,
    decision TEXT,
    comment TEXT,
    resulting_plan_version INTEGER,
    reminded_at TIMESTAMP
);
CREATE INDEX handovers_to ON handovers (to_user_id, status, id);
CREATE INDEX handovers_from ON handovers (from_user_id, status, id);
CREATE INDEX handovers_due ON handovers (status, due_at);

CREATE TABLE consultations (
    id TEXT PRIMARY KEY NOT NULL,
    requester_id TEXT NOT NULL REFERENCES users (id),
    centre_id TEXT NOT NULL REFERENCES organizations (id),
    patient_id TEXT REFERENCES patients (id),
    priority TEXT NOT NULL,
    question TEXT NOT NULL,
    status TEXT NOT NULL,
    due_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    accepted_at TIMESTAMP,
    accepted_by TEXT REFERENCES users (id),
    answered_at TIMESTAMP,
    answered_by TEXT REFERENCES users (id),
    answer TEXT,
    proposed_plan TEXT,
    declined_at TIMESTAMP,
    decline_reason TEXT,
    closed_at TIMESTAMP,
    outcome TEXT,
    referral_avoided BOOLEAN,
    cancelled_at TIMESTAMP,
    escalated_at TIMESTAMP,
    applied_plan_version INTEGER
);
CREATE INDEX consultations_requester ON consultations (requester_id, status, id);
CREATE INDEX consultations_centre ON consultations (centre_id, status, id);
CREATE INDEX consultations_patient ON consultations (patient_id, status);
CREATE INDEX consultations_due ON consultations (status, due_at);
CREATE INDEX consultations_metrics ON consultations (centre_id, created_at);
