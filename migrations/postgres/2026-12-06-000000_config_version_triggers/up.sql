-- Every write to what the configuration is built from moves the change marker in its own
-- transaction: a change is never saved without the marker other replicas poll (the gateway also
-- bumps it after each write, which a crash between the two could skip). Deferred to the commit,
-- so a long transaction (rotate-secret) holds the marker's row only while it commits.
CREATE FUNCTION apiproxy_bump_config_version() RETURNS trigger AS $$
BEGIN
  UPDATE config_version SET version = version + 1 WHERE id = 1;
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE CONSTRAINT TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE ON users DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION apiproxy_bump_config_version();
CREATE CONSTRAINT TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE ON api_keys DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION apiproxy_bump_config_version();
CREATE CONSTRAINT TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE ON providers DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION apiproxy_bump_config_version();
CREATE CONSTRAINT TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE ON provider_api_keys DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION apiproxy_bump_config_version();
CREATE CONSTRAINT TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE ON provider_models DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION apiproxy_bump_config_version();
CREATE CONSTRAINT TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE ON logical_models DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION apiproxy_bump_config_version();
CREATE CONSTRAINT TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE ON logical_model_upstreams DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION apiproxy_bump_config_version();
