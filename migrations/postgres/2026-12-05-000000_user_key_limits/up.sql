-- Limits every API key of a user obeys, whatever the key's own say (set by admins only).
ALTER TABLE users ADD COLUMN key_allowed_providers TEXT;
ALTER TABLE users ADD COLUMN key_rate_limit_rps INTEGER;
