ALTER TABLE users DROP COLUMN key_rate_limit_rps;
ALTER TABLE users DROP COLUMN key_allowed_providers;
