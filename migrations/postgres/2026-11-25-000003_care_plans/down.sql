DROP TABLE observation_alerts;
DROP TABLE observations;
DROP TABLE care_plan_versions;
DROP TABLE care_plans;
