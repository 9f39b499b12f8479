CREATE INDEX audit_events_id ON audit_events (id);
DROP INDEX dispensations_latest;
