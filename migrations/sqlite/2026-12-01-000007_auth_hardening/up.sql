-- Failed sign-ins, counted per (account, client address) and per account.
-- The account is the SHA-256 of the normalised email, never the email
-- itself; the old rows (raw emails) are dropped with their table.
DROP TABLE login_failures;
CREATE TABLE login_failures (
    id TEXT PRIMARY KEY NOT NULL,
    account_hash TEXT NOT NULL,
    client_addr TEXT NOT NULL,
    at TIMESTAMP NOT NULL
);
CREATE INDEX login_failures_account_at ON login_failures (account_hash, at);
CREATE INDEX login_failures_account_client_at ON login_failures (account_hash, client_addr, at);
CREATE INDEX login_failures_at ON login_failures (at);

-- One row per sign-in (a refresh-token family): access tokens carry its id
-- (`sid`) and stop working once it is revoked. `client_addr` is the
-- address group it was opened from (a known address for the account).
CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    client_addr TEXT,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);
CREATE INDEX sessions_user_client ON sessions (user_id, client_addr, created_at);
INSERT INTO sessions (id, user_id, client_addr, created_at, revoked_at)
    SELECT family_id, MIN(user_id), NULL, MIN(issued_at), MAX(revoked_at)
    FROM refresh_tokens GROUP BY family_id;

-- The client address the request came from (after trusted proxies).
ALTER TABLE audit_events ADD COLUMN client_ip TEXT;
