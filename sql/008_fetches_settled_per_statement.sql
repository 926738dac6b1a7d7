-- What a TLS config fetch settles (005: pending requests it delivered, previous passwords no
-- device needs any more; 007: waiting briefly for a request a proxy holds) is now worked out
-- once per INSERT statement over all the fetches it records, instead of twice per row.
--
-- The provisioning service records fetches in batches (hundreds a statement in a mass reboot):
-- the two row triggers ran six statements per TLS row, ~40 µs of PostgreSQL's CPU each; the
-- statement trigger runs three per batch, joined to the batch's rows (the transition table).
-- The rules are those of 005 and 007, row for row; one function now holds both, so nothing
-- depends on the order in which triggers fire.

DROP TRIGGER config_fetched_meets_dispatch ON autoprov.config_fetch;
DROP TRIGGER config_fetched ON autoprov.config_fetch;
DROP FUNCTION autoprov.config_fetched_meets_dispatch();
DROP FUNCTION autoprov.config_fetched();

CREATE FUNCTION autoprov.configs_fetched() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    rid bigint;
    seen pg_snapshot;
    kept text := current_setting('lock_timeout');
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fetched WHERE port = 'tls') THEN
        RETURN NULL;  -- bootstrap fetches settle nothing
    END IF;
    -- `fetched`: a fetch's config had the change in it (its snapshot sees the change's
    -- transaction); no NOTIFY is needed. A request being worked on (locked) is passed by here.
    UPDATE autoprov.resync_request
       SET state = 'fetched', updated_at = now()
     WHERE id IN (SELECT r.id
                    FROM autoprov.resync_request r
                    JOIN fetched f ON f.device_id = r.device_id AND f.port = 'tls'
                   WHERE r.state = 'pending'
                     AND pg_visible_in_snapshot(r.changed_xact, f.read_snapshot)
                     FOR UPDATE OF r SKIP LOCKED);

    -- The old password may go once every device using the subscriber fetched the new one.
    DELETE FROM autoprov.previous_password
     WHERE subscriber_id IN (
        SELECT p.subscriber_id
          FROM autoprov.previous_password p
          JOIN autoprov.device_line l ON l.subscriber_id = p.subscriber_id
          JOIN fetched f ON f.device_id = l.device_id AND f.port = 'tls'
         WHERE pg_visible_in_snapshot(p.replaced_xact, f.read_snapshot)
           AND NOT EXISTS (
               SELECT 1 FROM autoprov.device_line other
                WHERE other.subscriber_id = p.subscriber_id
                  AND other.device_id <> f.device_id
                  AND NOT EXISTS (SELECT 1 FROM autoprov.config_fetch c
                                   WHERE c.device_id = other.device_id AND c.port = 'tls'
                                     AND pg_visible_in_snapshot(p.replaced_xact,
                                                                c.read_snapshot)))
           FOR UPDATE OF p SKIP LOCKED);

    -- A request still pending though a fetch holds its change was passed by locked. A proxy
    -- locks one for milliseconds while it looks for the phone's contacts: wait for it, up to
    -- 200 ms, so the fetch still counts; a transaction that holds it longer (a DBA's, still
    -- making a change) is passed by. Only a batch that meets a locked request waits, in the
    -- service's background writer, never a phone.
    FOR rid, seen IN SELECT DISTINCT ON (r.id) r.id, f.read_snapshot
                       FROM autoprov.resync_request r
                       JOIN fetched f ON f.device_id = r.device_id AND f.port = 'tls'
                      WHERE r.state = 'pending'
                        AND pg_visible_in_snapshot(r.changed_xact, f.read_snapshot)
    LOOP
        PERFORM set_config('lock_timeout', '200ms', true);
        BEGIN
            -- Once the lock is ours the row is read again, and all of it must still hold: a
            -- dispatch that found contacts has made it `sending` (left to its NOTIFYs), and a
            -- change merged into it meanwhile is one this fetch does not have.
            UPDATE autoprov.resync_request SET state = 'fetched', updated_at = now()
             WHERE id = rid AND state = 'pending'
               AND pg_visible_in_snapshot(changed_xact, seen);
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
        PERFORM set_config('lock_timeout', kept, true);
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER configs_fetched AFTER INSERT ON autoprov.config_fetch
    REFERENCING NEW TABLE AS fetched
    FOR EACH STATEMENT EXECUTE FUNCTION autoprov.configs_fetched();
