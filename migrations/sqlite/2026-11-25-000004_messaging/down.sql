DROP INDEX notifications_resource;
DROP TABLE digest_runs;
DROP TABLE idempotency_keys;
DROP TABLE thread_reads;
DROP TRIGGER messages_no_delete;
DROP TRIGGER messages_no_update;
DROP TABLE messages;
DROP TABLE threads;
