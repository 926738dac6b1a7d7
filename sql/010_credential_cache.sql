-- Kamailio keeps each phone's verified HA1 in shared memory (kemi/credentials.py), so a refresh
-- asks no database and known phones register through a database outage. A DBA's plain SQL must
-- still take effect at once: a changed password, renamed or deleted subscriber drops its entry.
CREATE FUNCTION autoprov.credentials_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('autoprov_credentials', '*');
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' OR OLD.password IS DISTINCT FROM NEW.password
       OR OLD.username IS DISTINCT FROM NEW.username OR OLD.domain IS DISTINCT FROM NEW.domain
       OR OLD.ha1 IS DISTINCT FROM NEW.ha1 THEN
        PERFORM pg_notify('autoprov_credentials', OLD.username || '@' || OLD.domain);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER credentials_changed AFTER UPDATE OR DELETE ON subscriber
    FOR EACH ROW EXECUTE FUNCTION autoprov.credentials_changed();
CREATE TRIGGER credentials_truncated AFTER TRUNCATE ON subscriber
    FOR EACH STATEMENT EXECUTE FUNCTION autoprov.credentials_changed();
