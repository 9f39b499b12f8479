-- Live updates (GET /api/v1/events): one row per event per recipient,
-- written in the transaction of the change it reports. The id is the SSE id;
-- AUTOINCREMENT so that an id is never reused after a purge (a client's
-- Last-Event-ID must keep meaning the same position). SQLite has one writer
-- at a time: ids are assigned in commit order.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL REFERENCES users(id),
    kind TEXT NOT NULL,
    patient_id TEXT,
    data TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX events_user_id ON events (user_id, id);
CREATE INDEX events_created_at ON events (created_at);

-- The highest event id the retention purge removed: a Last-Event-ID below
-- it may have missed events, and is answered with `stream.reset`.
CREATE TABLE event_horizon (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    purged_through BIGINT NOT NULL
);
INSERT INTO event_horizon (id, purged_through) VALUES (1, 0);

-- Single-use stream tickets for browsers (EventSource sends no
-- Authorization header): only the SHA-256 of the ticket is stored.
CREATE TABLE event_tickets (
    ticket_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    session_id TEXT NOT NULL,
    token_version INTEGER NOT NULL,
    token_expires_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX event_tickets_expires_at ON event_tickets (expires_at);
