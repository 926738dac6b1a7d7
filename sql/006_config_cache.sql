-- The provisioning service keeps rendered configs in memory (provisioning_wsgi/cache.py) and
-- drops them when what they were rendered from changes: every change to a device, its lines or a
-- subscriber a line uses sends NOTIFY autoprov_config, delivered when the change commits.
--
-- Payload: '<device id>' or '<device id> <mac> [<old mac>]' (a device row: the MAC also clears a
-- cached "unknown device" answer), or '*' (everything, e.g. after a TRUNCATE).
-- Identical payloads within one transaction are sent once.
--
-- The service also writes its config_fetch rows in the background now (batched, a moment after
-- the answer), so a row's fetched_at is given explicitly: the time of the request. For a config
-- served from memory that is later than the read of it; read_snapshot stays exact.

COMMENT ON COLUMN autoprov.config_fetch.fetched_at IS
    'when the phone asked (the service passes it); the config may have been read earlier';
COMMENT ON COLUMN autoprov.config_fetch.read_snapshot IS
    'the snapshot the served config was read in (which changes it holds, exactly)';

CREATE FUNCTION autoprov.config_changed_device() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('autoprov_config', OLD.id || ' ' || OLD.mac);
    ELSIF TG_OP = 'UPDATE' AND OLD.mac IS DISTINCT FROM NEW.mac THEN
        PERFORM pg_notify('autoprov_config', NEW.id || ' ' || NEW.mac || ' ' || OLD.mac);
    ELSE
        PERFORM pg_notify('autoprov_config', NEW.id || ' ' || NEW.mac);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE ON autoprov.device
    FOR EACH ROW EXECUTE FUNCTION autoprov.config_changed_device();

CREATE FUNCTION autoprov.config_changed_line() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('autoprov_config', OLD.device_id::text);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('autoprov_config', NEW.device_id::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE ON autoprov.device_line
    FOR EACH ROW EXECUTE FUNCTION autoprov.config_changed_line();

-- A subscriber's username, domain or password is printed in the configs of the devices that
-- have a line for it. (Its lines keep it from being deleted: ON DELETE RESTRICT.)
CREATE FUNCTION autoprov.config_changed_subscriber() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('autoprov_config', l.device_id::text)
       FROM autoprov.device_line l WHERE l.subscriber_id = OLD.id;
    RETURN NULL;
END $$;

CREATE TRIGGER config_changed AFTER UPDATE ON subscriber
    FOR EACH ROW
    WHEN (OLD.username IS DISTINCT FROM NEW.username OR OLD.domain IS DISTINCT FROM NEW.domain
          OR OLD.password IS DISTINCT FROM NEW.password OR OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION autoprov.config_changed_subscriber();

CREATE FUNCTION autoprov.config_changed_all() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('autoprov_config', '*');
    RETURN NULL;
END $$;

CREATE TRIGGER config_truncated AFTER TRUNCATE ON autoprov.device
    FOR EACH STATEMENT EXECUTE FUNCTION autoprov.config_changed_all();
CREATE TRIGGER config_truncated AFTER TRUNCATE ON autoprov.device_line
    FOR EACH STATEMENT EXECUTE FUNCTION autoprov.config_changed_all();
CREATE TRIGGER config_truncated AFTER TRUNCATE ON subscriber
    FOR EACH STATEMENT EXECUTE FUNCTION autoprov.config_changed_all();
