-- PostgreSQL only (its audit_head's fillfactor, see the PostgreSQL folder):
-- SQLite updates a row in place, leaving no versions to walk. Kept so both
-- folders list the same migrations.
SELECT 1;
