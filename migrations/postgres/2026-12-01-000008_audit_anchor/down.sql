DROP TRIGGER audit_head_no_truncate ON audit_head;
DROP TRIGGER audit_head_forward_only ON audit_head;
DROP FUNCTION audit_head_forward_only();
