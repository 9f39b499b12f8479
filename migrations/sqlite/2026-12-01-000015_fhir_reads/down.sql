DROP INDEX audit_events_id;
