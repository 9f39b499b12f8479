-- Rows updated by nearly every write batch (issue 14): the audit chain's
-- head, one row moved by every batch of every instance. Each update leaves
-- a dead version on the row's page; PostgreSQL prunes the page only once
-- less than max(fillfactor's free space, 10 %) is left, so at the default
-- fillfactor (100) some fifty versions pile up, and every lock and update
-- of the head walks them with a visibility check each (perf: the largest
-- share of PostgreSQL's time on the pharmacist's read at 16 clients). At
-- fillfactor 10 the page is pruned once about six versions are there. The
-- table is one row: the space it costs is one page.
ALTER TABLE audit_head SET (fillfactor = 10);

-- The head's trigger checks that the head names a stored row. PL/pgSQL
-- keeps a generic plan for that lookup per connection, chosen once from the
-- table's size at the time: planned while audit_events was nearly empty (a
-- new database, or a fresh benchmark), it was a sequential scan, and it
-- stayed one as the table grew, until an ANALYZE happened to invalidate it.
-- Every batch then read the whole chain (perf: most of PostgreSQL's time
-- on the pharmacist's read). The lookup is by the primary key: never scan.
ALTER FUNCTION audit_head_forward_only() SET enable_seqscan = off;
