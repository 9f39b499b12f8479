-- One row per open event stream (GET /api/v1/events), so that
-- events.max_streams_per_user holds across instances (issue 15): an
-- instance opening a stream takes a per-user lock, deletes the user's
-- expired leases, counts the live ones and adds its own or refuses (429).
-- Each instance pushes its leases' expiry forward at every heartbeat (one
-- statement per instance); a dead instance's leases lapse on their own.
-- Used on PostgreSQL only: on SQLite one instance owns the database and
-- counts its streams in process (the table exists so that both schemas
-- stay the same).
CREATE TABLE event_stream_leases (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    instance TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX event_stream_leases_user ON event_stream_leases (user_id, expires_at);
CREATE INDEX event_stream_leases_instance ON event_stream_leases (instance);
