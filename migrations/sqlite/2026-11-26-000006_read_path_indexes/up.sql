-- The latest consent is read on every access check, ordered by
-- (recorded_at, id): with id in the index no sort is needed.
CREATE INDEX consents_latest ON consents (patient_id, recorded_at, id);
DROP INDEX consents_patient;
