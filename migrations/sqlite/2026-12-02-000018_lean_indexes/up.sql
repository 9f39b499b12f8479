-- The pharmacist's page reads a patient's latest dispensations newest
-- first (store::analgesic_page, HEAD_SQL): in this index's order, so the
-- database walks it backwards and sorts nothing.
CREATE INDEX dispensations_latest ON dispensations (patient_id, dispensed_on, id);

-- audit_events.id is UNIQUE since the table was made, which is already an
-- index on it: audit_events_id (fhir_reads) was a second copy, kept up to
-- date by every audit row for nothing.
DROP INDEX audit_events_id;

-- At most one current referent per patient: store::care_team::add_member
-- ends the previous referent's membership before it adds the new one, and
-- now the schema holds every other writer to the same rule.
CREATE UNIQUE INDEX care_team_one_referent ON care_team_members (patient_id)
    WHERE team_role = 'referent' AND until IS NULL;
