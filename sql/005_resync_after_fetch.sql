-- A config fetch over TLS tells the resync logic that the phone has its current config:
-- a pending request whose change the fetch included has nothing left to do, and a rotated
-- password the phone no longer holds is retired.
--
-- "Included" is decided by snapshot, not time: the fetch records the snapshot its config was
-- read in (config_fetch.read_snapshot), and a change is in it exactly when its transaction is
-- visible there. A change still being made (its row locked) is not: SKIP LOCKED passes it by,
-- which also keeps a phone's fetch from ever waiting on a DBA's open transaction.

ALTER TABLE autoprov.resync_request DROP CONSTRAINT resync_request_state_check;
ALTER TABLE autoprov.resync_request ADD CONSTRAINT resync_request_state_check
    CHECK (state IN ('pending', 'sending', 'done', 'failed', 'fetched'));

CREATE FUNCTION autoprov.config_fetched() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- `fetched`: the phone fetched a config with the change in it; no NOTIFY is needed.
    UPDATE autoprov.resync_request
       SET state = 'fetched', updated_at = now()
     WHERE id IN (SELECT id FROM autoprov.resync_request
                   WHERE device_id = NEW.device_id AND state = 'pending'
                     AND pg_visible_in_snapshot(changed_xact, NEW.read_snapshot)
                   FOR UPDATE SKIP LOCKED);
    -- The old password may go once every device using the subscriber fetched the new one.
    DELETE FROM autoprov.previous_password
     WHERE subscriber_id IN (
        SELECT p.subscriber_id
          FROM autoprov.previous_password p
          JOIN autoprov.device_line l ON l.subscriber_id = p.subscriber_id
         WHERE l.device_id = NEW.device_id
           AND pg_visible_in_snapshot(p.replaced_xact, NEW.read_snapshot)
           AND NOT EXISTS (
               SELECT 1 FROM autoprov.device_line other
                WHERE other.subscriber_id = p.subscriber_id
                  AND other.device_id <> NEW.device_id
                  AND NOT EXISTS (SELECT 1 FROM autoprov.config_fetch f
                                   WHERE f.device_id = other.device_id AND f.port = 'tls'
                                     AND pg_visible_in_snapshot(p.replaced_xact,
                                                                f.read_snapshot)))
           FOR UPDATE OF p SKIP LOCKED);
    RETURN NULL;
END $$;

CREATE TRIGGER config_fetched AFTER INSERT ON autoprov.config_fetch
    FOR EACH ROW WHEN (NEW.port = 'tls') EXECUTE FUNCTION autoprov.config_fetched();
