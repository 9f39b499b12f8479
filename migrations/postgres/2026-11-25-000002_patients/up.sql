CREATE TABLE patients (
    id TEXT PRIMARY KEY NOT NULL,
    ins TEXT UNIQUE,
    family_name TEXT NOT NULL,
    given_names TEXT NOT NULL,
    birth_date DATE NOT NULL,
    sex TEXT NOT NULL,
    phone TEXT,
    created_by TEXT NOT NULL REFERENCES users (id),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE consents (
    id TEXT PRIMARY KEY NOT NULL,
    patient_id TEXT NOT NULL REFERENCES patients (id),
    status TEXT NOT NULL,
    note TEXT,
    recorded_by TEXT NOT NULL REFERENCES users (id),
    recorded_at TIMESTAMP NOT NULL
);
CREATE INDEX consents_patient ON consents (patient_id, recorded_at);

CREATE TABLE care_team_members (
    id TEXT PRIMARY KEY NOT NULL,
    patient_id TEXT NOT NULL REFERENCES patients (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    team_role TEXT NOT NULL,
    since TIMESTAMP NOT NULL,
    until TIMESTAMP,
    added_by TEXT NOT NULL REFERENCES users (id),
    ended_by TEXT REFERENCES users (id)
);
CREATE INDEX care_team_patient ON care_team_members (patient_id, until);
CREATE INDEX care_team_user ON care_team_members (user_id, until);

CREATE TABLE access_requests (
    id TEXT PRIMARY KEY NOT NULL,
    patient_id TEXT NOT NULL REFERENCES patients (id),
    requester_id TEXT NOT NULL REFERENCES users (id),
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    decided_by TEXT REFERENCES users (id),
    decided_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX access_requests_patient ON access_requests (patient_id, status);

CREATE TABLE emergency_grants (
    id TEXT PRIMARY KEY NOT NULL,
    patient_id TEXT NOT NULL REFERENCES patients (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    reason TEXT NOT NULL,
    granted_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX emergency_grants_lookup ON emergency_grants (patient_id, user_id, expires_at);
CREATE INDEX emergency_grants_user ON emergency_grants (user_id, expires_at);

CREATE TABLE notifications (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    patient_id TEXT REFERENCES patients (id),
    created_at TIMESTAMP NOT NULL,
    read_at TIMESTAMP
);
CREATE INDEX notifications_user ON notifications (user_id, id);

CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY NOT NULL,
    id TEXT NOT NULL UNIQUE,
    at TIMESTAMP NOT NULL,
    actor_id TEXT,
    actor_role TEXT,
    action TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT,
    patient_id TEXT,
    basis TEXT,
    outcome TEXT NOT NULL,
    request_id TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_events_patient ON audit_events (patient_id, seq);
CREATE INDEX audit_events_actor ON audit_events (actor_id, seq);

-- The chain's head: one row, locked by every append so the chain stays a line.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
