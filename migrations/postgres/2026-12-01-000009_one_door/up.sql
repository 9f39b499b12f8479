-- A consultation's basis on its patient ends when it closes and, at the
-- latest, at `basis_until` (consultations.basis_max_days after submission,
-- fixed when it is submitted). Existing consultations get the default, 30 days.
ALTER TABLE consultations ADD COLUMN basis_until TIMESTAMP;
UPDATE consultations SET basis_until = created_at + INTERVAL '30 days';
