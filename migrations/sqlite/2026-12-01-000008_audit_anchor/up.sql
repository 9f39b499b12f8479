-- The chain's head only moves forward, onto a row that is stored: hiding
-- the newest rows by setting the head back now takes dropping this trigger
-- first (and the checkpoints outside the database still show it, see
-- src/audit/anchor.rs). There is one head row, made with the table: it can
-- be neither deleted nor joined by another (INSERT OR REPLACE included: the
-- insert trigger fires first).
CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head
WHEN NEW.id <> OLD.id OR NEW.seq <= OLD.seq
    OR NOT EXISTS (SELECT 1 FROM audit_events WHERE seq = NEW.seq AND hash = NEW.hash)
BEGIN
    SELECT RAISE(ABORT, 'audit_head only moves forward, onto a stored row');
END;
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
BEGIN
    SELECT RAISE(ABORT, 'audit_head: the chain head cannot be deleted');
END;
CREATE TRIGGER audit_head_no_insert BEFORE INSERT ON audit_head
BEGIN
    SELECT RAISE(ABORT, 'audit_head: there is one chain head');
END;
