ALTER TABLE audit_events DROP COLUMN client_ip;
DROP TABLE sessions;
DROP TABLE login_failures;
CREATE TABLE login_failures (
    id TEXT PRIMARY KEY NOT NULL,
    email TEXT NOT NULL,
    at TIMESTAMP NOT NULL
);
CREATE INDEX login_failures_email_at ON login_failures (email, at);
