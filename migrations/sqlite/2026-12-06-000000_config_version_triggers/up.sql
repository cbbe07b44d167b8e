-- Every write to what the configuration is built from moves the change marker in its own
-- transaction: a change is never saved without the marker other replicas poll (the gateway also
-- bumps it after each write, which a crash between the two could skip).
CREATE TRIGGER bump_config_version_users_insert AFTER INSERT ON users BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_users_update AFTER UPDATE ON users BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_users_delete AFTER DELETE ON users BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_api_keys_insert AFTER INSERT ON api_keys BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_api_keys_update AFTER UPDATE ON api_keys BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_api_keys_delete AFTER DELETE ON api_keys BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_providers_insert AFTER INSERT ON providers BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_providers_update AFTER UPDATE ON providers BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_providers_delete AFTER DELETE ON providers BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_provider_api_keys_insert AFTER INSERT ON provider_api_keys BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_provider_api_keys_update AFTER UPDATE ON provider_api_keys BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_provider_api_keys_delete AFTER DELETE ON provider_api_keys BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_provider_models_insert AFTER INSERT ON provider_models BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_provider_models_update AFTER UPDATE ON provider_models BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_provider_models_delete AFTER DELETE ON provider_models BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_logical_models_insert AFTER INSERT ON logical_models BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_logical_models_update AFTER UPDATE ON logical_models BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_logical_models_delete AFTER DELETE ON logical_models BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_logical_model_upstreams_insert AFTER INSERT ON logical_model_upstreams BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_logical_model_upstreams_update AFTER UPDATE ON logical_model_upstreams BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER bump_config_version_logical_model_upstreams_delete AFTER DELETE ON logical_model_upstreams BEGIN UPDATE config_version SET version = version + 1 WHERE id = 1; END;
