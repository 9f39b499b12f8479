ALTER TABLE consultations DROP COLUMN basis_until;
