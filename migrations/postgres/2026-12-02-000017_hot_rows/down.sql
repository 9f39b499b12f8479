ALTER TABLE audit_head RESET (fillfactor);
ALTER FUNCTION audit_head_forward_only() RESET enable_seqscan;
