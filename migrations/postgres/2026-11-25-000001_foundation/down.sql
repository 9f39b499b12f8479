DROP TABLE write_lock;
DROP TABLE email_outbox;
DROP TABLE login_failures;
DROP TABLE refresh_tokens;
DROP TABLE invitations;
DROP TABLE users;
DROP TABLE organizations;
