-- A config fetch over TLS tells the resync logic that the phone has its current config:
-- a pending request older than the fetch has nothing left to do, and a rotated password the
-- phone no longer holds is retired.

ALTER TABLE autoprov.resync_request DROP CONSTRAINT resync_request_state_check;
ALTER TABLE autoprov.resync_request ADD CONSTRAINT resync_request_state_check
    CHECK (state IN ('pending', 'sending', 'done', 'failed', 'fetched'));

CREATE FUNCTION autoprov.config_fetched() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- `fetched`: the phone fetched its config after the change; no NOTIFY is needed.
    UPDATE autoprov.resync_request
       SET state = 'fetched', updated_at = now()
     WHERE device_id = NEW.device_id AND state = 'pending' AND updated_at < NEW.fetched_at;
    -- The old password may go once every device using the subscriber fetched since the change.
    DELETE FROM autoprov.previous_password p
     USING autoprov.device_line l
     WHERE l.device_id = NEW.device_id AND p.subscriber_id = l.subscriber_id
       AND p.replaced_at < NEW.fetched_at
       AND NOT EXISTS (
           SELECT 1 FROM autoprov.device_line other
            WHERE other.subscriber_id = p.subscriber_id AND other.device_id <> NEW.device_id
              AND NOT EXISTS (SELECT 1 FROM autoprov.config_fetch f
                               WHERE f.device_id = other.device_id AND f.port = 'tls'
                                 AND f.fetched_at > p.replaced_at));
    RETURN NULL;
END $$;

CREATE TRIGGER config_fetched AFTER INSERT ON autoprov.config_fetch
    FOR EACH ROW WHEN (NEW.port = 'tls') EXECUTE FUNCTION autoprov.config_fetched();
