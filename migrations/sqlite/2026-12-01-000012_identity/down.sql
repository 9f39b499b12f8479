DROP TABLE oidc_codes;
DROP TABLE oidc_flows;
DROP TABLE oidc_subjects;
ALTER TABLE sessions DROP COLUMN mfa_enrol_only;
DROP TABLE recovery_codes;
DROP TABLE totp_factors;
