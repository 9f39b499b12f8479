CREATE INDEX consents_patient ON consents (patient_id, recorded_at);
DROP INDEX consents_latest;
