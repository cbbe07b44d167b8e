DROP TRIGGER IF EXISTS bump_config_version ON users;
DROP TRIGGER IF EXISTS bump_config_version ON api_keys;
DROP TRIGGER IF EXISTS bump_config_version ON providers;
DROP TRIGGER IF EXISTS bump_config_version ON provider_api_keys;
DROP TRIGGER IF EXISTS bump_config_version ON provider_models;
DROP TRIGGER IF EXISTS bump_config_version ON logical_models;
DROP TRIGGER IF EXISTS bump_config_version ON logical_model_upstreams;
DROP FUNCTION IF EXISTS apiproxy_bump_config_version();
