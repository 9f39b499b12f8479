-- FHIR AuditEvent/{id} (issue 16): an audit row by its id, without a scan
-- of the whole (append-only) trail.
CREATE INDEX audit_events_id ON audit_events (id);
