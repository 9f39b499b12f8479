DROP TABLE end_reminders;
DROP TABLE dispensations;
DROP TABLE interventions;
DROP TABLE clinical_contexts;
