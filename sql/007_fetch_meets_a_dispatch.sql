-- A fetch and a proxy's dispatch can meet. A proxy locks a pending request for a few
-- milliseconds while it looks for the phone's contacts (dispatch_unchecked, dispatch_for_aor)
-- and, finding none, leaves it pending. config_fetched (005) passes locked requests by, so a
-- phone that fetched its config at that moment kept a pending request, and got a NOTIFY it no
-- longer needed. Now a request config_fetched left pending, though the fetch holds its change,
-- is waited for, briefly: a proxy lets go within milliseconds, while a transaction that holds
-- the request longer (a DBA's, still making a change) is passed by as before, after 200 ms at
-- most. Only a fetch that meets a locked request ever waits, in the service's background
-- writer, never a phone.

CREATE FUNCTION autoprov.config_fetched_meets_dispatch() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    rid bigint;
    kept text := current_setting('lock_timeout');
BEGIN
    FOR rid IN SELECT id FROM autoprov.resync_request
                WHERE device_id = NEW.device_id AND state = 'pending'
                  AND pg_visible_in_snapshot(changed_xact, NEW.read_snapshot)
    LOOP
        PERFORM set_config('lock_timeout', '200ms', true);
        BEGIN
            -- Once the lock is ours the row is read again, and all of it must still hold: a
            -- dispatch that found contacts has made it `sending` (left to its NOTIFYs), and a
            -- change merged into it meanwhile is one this fetch does not have.
            UPDATE autoprov.resync_request SET state = 'fetched', updated_at = now()
             WHERE id = rid AND state = 'pending'
               AND pg_visible_in_snapshot(changed_xact, NEW.read_snapshot);
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
        PERFORM set_config('lock_timeout', kept, true);
    END LOOP;
    RETURN NULL;
END $$;

-- Fires after config_fetched (triggers on one event fire in name order).
CREATE TRIGGER config_fetched_meets_dispatch AFTER INSERT ON autoprov.config_fetch
    FOR EACH ROW WHEN (NEW.port = 'tls')
    EXECUTE FUNCTION autoprov.config_fetched_meets_dispatch();
