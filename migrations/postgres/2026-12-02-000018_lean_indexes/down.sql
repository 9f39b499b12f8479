DROP INDEX care_team_one_referent;
CREATE INDEX audit_events_id ON audit_events (id);
DROP INDEX dispensations_latest;
