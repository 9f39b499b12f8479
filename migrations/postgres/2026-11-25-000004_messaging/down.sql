DROP INDEX notifications_resource;
DROP TABLE digest_runs;
DROP TABLE idempotency_keys;
DROP TABLE thread_reads;
DROP TABLE messages;
DROP FUNCTION messages_immutable();
DROP TABLE threads;
