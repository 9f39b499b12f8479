-- Identity (DESIGN §15): a TOTP second factor, recovery codes, OpenID
-- Connect subjects linked to accounts, and the short-lived state of OIDC
-- sign-ins (in the database, so that any instance can finish a flow that
-- another began).

-- At most one TOTP factor per account; `confirmed_at` is set once a first
-- code proves the authenticator holds the secret. `last_step` is the time
-- step of the last accepted code: a code is accepted once.
CREATE TABLE totp_factors (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id),
    secret TEXT NOT NULL,
    confirmed_at TIMESTAMP,
    last_step BIGINT,
    created_at TIMESTAMP NOT NULL
);

-- Single-use recovery codes, stored as their SHA-256 (80 random bits each).
CREATE TABLE recovery_codes (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    code_hash TEXT NOT NULL,
    used_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX recovery_codes_user ON recovery_codes (user_id);

-- A session whose tokens may only enrol a second factor
-- (`auth.require_mfa_roles`).
ALTER TABLE sessions ADD COLUMN mfa_enrol_only BOOLEAN NOT NULL DEFAULT FALSE;

-- A provider's subject linked to an account (at an OIDC sign-in).
CREATE TABLE oidc_subjects (
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX oidc_subjects_user ON oidc_subjects (user_id);

-- A sign-in begun at a provider: state (hashed), nonce and PKCE verifier,
-- for a few minutes, deleted when used.
CREATE TABLE oidc_flows (
    state_hash TEXT PRIMARY KEY NOT NULL,
    provider TEXT NOT NULL,
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    client_state TEXT,
    invitation_hash TEXT,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX oidc_flows_expires ON oidc_flows (expires_at);

-- The one-time code a finished OIDC sign-in hands to the client (hashed).
CREATE TABLE oidc_codes (
    code_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    provider TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX oidc_codes_expires ON oidc_codes (expires_at);
