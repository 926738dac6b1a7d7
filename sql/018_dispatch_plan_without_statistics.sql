-- A fan-out's dispatch must not depend on fresh planner statistics (issue 22). Right after a
-- fleet registered or was imported, autovacuum has not yet analysed location, subscriber or
-- device_line: the planner then thought them small, hashed all of them for every batch of 500
-- requests (~100 ms a batch, 9 of a 50,000-phone fan-out's 16 s) and, where its estimates grew,
-- compiled the query with JIT (~250 ms). A batch is at most a few hundred requests, each with a
-- few lines and bindings: the plan is always "from each request, down the indexes". So the join
-- order is the written one, by nested loops, without JIT, and the requests' own update looks the
-- NOTIFYs up in a hashed subplan instead of joining them.
CREATE OR REPLACE FUNCTION autoprov.dispatch(ids bigint[]) RETURNS integer
LANGUAGE plpgsql
SET join_collapse_limit = 1 SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
AS $$
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
    ), upd AS (
        UPDATE autoprov.resync_request r
           SET checked = true, updated_at = now(),
               state = CASE WHEN r.id IN (SELECT request_id FROM ins) THEN 'sending'
                            ELSE r.state END,
               attempts = r.attempts + CASE WHEN r.id IN (SELECT request_id FROM ins) THEN 1
                                            ELSE 0 END
         WHERE r.id = ANY (ids)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM ins) INTO queued FROM (SELECT count(*) FROM upd) AS done;
    IF queued > 0 THEN
        PERFORM pg_notify('autoprov_resync', 'queued');
    END IF;
    RETURN queued;
END $$;

-- The same for the queries around it in a fan-out: never JIT-compiled (each runs in
-- milliseconds; JIT costs a quarter of a second whenever stale estimates cross its threshold).
ALTER FUNCTION autoprov.dispatch_unchecked(integer) SET jit = off;
ALTER FUNCTION autoprov.dispatch_for_aor(text, text) SET jit = off;
ALTER FUNCTION autoprov.claim_notifies(integer, integer, text) SET jit = off;
ALTER FUNCTION autoprov.record_notify_outcomes(bigint[], integer[], boolean[], boolean[],
                                               boolean[], double precision[]) SET jit = off;
