-- One conversation per subject. Subjects are typed: `patient` now;
-- `consultation` and `handover` join with their issues (patient_id may then be null).
CREATE TABLE threads (
    id TEXT PRIMARY KEY NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    patient_id TEXT REFERENCES patients (id),
    created_at TIMESTAMP NOT NULL,
    -- The newest message (null: none yet).
    last_message_id TEXT,
    last_message_at TIMESTAMP,
    -- Sort key of thread lists: the newest message's id, or the thread's own
    -- id before any (both UUIDv7, so ordered by time).
    activity_id TEXT NOT NULL
);
CREATE UNIQUE INDEX threads_subject ON threads (subject_type, subject_id);
CREATE INDEX threads_patient ON threads (patient_id);
CREATE INDEX threads_activity ON threads (activity_id);

-- Immutable. Pages are read along (thread_id, id): flat however long a thread grows;
-- author_id in the index lets unread counts skip one's own messages without the table.
CREATE TABLE messages (
    id TEXT PRIMARY KEY NOT NULL,
    thread_id TEXT NOT NULL REFERENCES threads (id),
    author_id TEXT NOT NULL REFERENCES users (id),
    body TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX messages_thread ON messages (thread_id, id) INCLUDE (author_id);

CREATE FUNCTION messages_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'messages are immutable';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER messages_no_update_delete BEFORE UPDATE OR DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_immutable();
CREATE TRIGGER messages_no_truncate BEFORE TRUNCATE ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION messages_immutable();

-- How far each user has read each thread (a message id; only moves forward).
CREATE TABLE thread_reads (
    thread_id TEXT NOT NULL REFERENCES threads (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    last_read_id TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (thread_id, user_id)
);

-- Idempotency-Key of writes, per user, kept 24 h: the request's fingerprint and the answer given.
CREATE TABLE idempotency_keys (
    user_id TEXT NOT NULL REFERENCES users (id),
    idem_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    response TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (user_id, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- One daily digest per user and day, whichever instance sends it.
CREATE TABLE digest_runs (
    user_id TEXT NOT NULL REFERENCES users (id),
    day DATE NOT NULL,
    created_at TIMESTAMP NOT NULL,
    email_id TEXT,
    PRIMARY KEY (user_id, day)
);

CREATE INDEX notifications_resource ON notifications (user_id, resource_type, resource_id, read_at);

-- Every existing patient gets its thread (sorted by the patient's creation).
INSERT INTO threads (id, subject_type, subject_id, patient_id, created_at, activity_id)
SELECT gen_random_uuid()::text, 'patient', id, id, created_at, id
FROM patients;
