CREATE TABLE organizations (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    email TEXT,
    phone TEXT,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX organizations_kind ON organizations (kind, id);

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    email TEXT NOT NULL UNIQUE,
    full_name TEXT NOT NULL,
    role TEXT NOT NULL,
    organization_id TEXT REFERENCES organizations (id),
    rpps TEXT UNIQUE,
    phone TEXT,
    active BOOLEAN NOT NULL,
    password_hash TEXT,
    token_version INTEGER NOT NULL,
    notification_preference TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX users_organization ON users (organization_id);

CREATE TABLE invitations (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    token_hash TEXT NOT NULL UNIQUE,
    expires_at TIMESTAMP NOT NULL,
    accepted_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX invitations_user ON invitations (user_id);

CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    family_id TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    issued_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP,
    revoked_at TIMESTAMP
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE login_failures (
    id TEXT PRIMARY KEY NOT NULL,
    email TEXT NOT NULL,
    at TIMESTAMP NOT NULL
);
CREATE INDEX login_failures_email_at ON login_failures (email, at);

CREATE TABLE email_outbox (
    id TEXT PRIMARY KEY NOT NULL,
    to_address TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    locked_until TIMESTAMP,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    sent_at TIMESTAMP
);
CREATE INDEX email_outbox_due ON email_outbox (status, next_attempt_at);

-- SQLite: every write transaction starts by touching this table, which takes
-- the write lock at once, so a transaction that reads before it writes never
-- finds its snapshot stale (SQLITE_BUSY_SNAPSHOT) when instances share a file.
CREATE TABLE write_lock (
    id INTEGER PRIMARY KEY NOT NULL
);
