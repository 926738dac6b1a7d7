-- A dispatch that queued NOTIFYs wakes the proxies with the payload `queued`: they only have to
-- send (the proxy owning each binding claims its own). New requests still wake them with an empty
-- payload; only those make a proxy dispatch and mirror the pending AORs again, which costs a
-- fan-out to a fleet a query of every pending request (issue 22: 50,000 phones).
CREATE OR REPLACE FUNCTION autoprov.dispatch(ids bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    queued integer;
BEGIN
    WITH ins AS (
        INSERT INTO autoprov.resync_notify
            (request_id, attempt, line_no, subscriber_id, aor, ruid, contact, received, socket,
             server_id, credential)
        SELECT r.id, r.attempts + 1, l.line_no, s.id, s.username || '@' || s.domain, loc.ruid,
               loc.contact, NULLIF(loc.received, ''), loc.socket, loc.server_id,
               CASE WHEN p.subscriber_id IS NULL THEN 'current' ELSE 'previous' END
          FROM autoprov.resync_request r
          JOIN autoprov.device_line l ON l.device_id = r.device_id
          JOIN subscriber s ON s.id = l.subscriber_id
          JOIN location loc ON loc.username = s.username AND loc.domain = s.domain
                           AND loc.expires > localtimestamp
          LEFT JOIN autoprov.previous_password p ON p.subscriber_id = s.id
         WHERE r.id = ANY (ids)
        ON CONFLICT DO NOTHING
        RETURNING request_id
    ), sent AS (
        SELECT DISTINCT request_id FROM ins
    ), upd AS (
        UPDATE autoprov.resync_request r
           SET checked = true, updated_at = now(),
               state = CASE WHEN sent.request_id IS NULL THEN r.state ELSE 'sending' END,
               attempts = r.attempts + CASE WHEN sent.request_id IS NULL THEN 0 ELSE 1 END
          FROM unnest(ids) AS picked(id)
          LEFT JOIN sent ON sent.request_id = picked.id
         WHERE r.id = picked.id
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM ins) INTO queued FROM (SELECT count(*) FROM upd) AS done;
    IF queued > 0 THEN
        PERFORM pg_notify('autoprov_resync', 'queued');
    END IF;
    RETURN queued;
END $$;
