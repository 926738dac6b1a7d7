-- A fan-out writes each NOTIFY row once less (issue 22). Until now a proxy's dispatch inserted
-- its NOTIFY rows `queued`, and the same proxy claimed them right after with a second statement
-- that updated every row to `sent` (1.0 of PostgreSQL's 4.5 s in a 50,000-phone fan-out). Now
-- the proxy that dispatches inserts the rows of its own bindings `sent` at once and gets what
-- sending them needs back; the bindings of other proxies are queued for them as before.

-- Pick up to `max_requests` requests nobody has looked at yet (locked until the caller's
-- transaction ends; others skip them).
CREATE FUNCTION autoprov.unchecked_requests(max_requests integer) RETURNS bigint[]
LANGUAGE sql SET jit = off AS $$
    SELECT array_agg(id) FROM (
        SELECT r.id FROM autoprov.resync_request r
         WHERE r.state = 'pending' AND NOT r.checked
           AND NOT autoprov.resync_in_flight(r.device_id)
         ORDER BY r.id LIMIT max_requests FOR UPDATE SKIP LOCKED) AS picked
$$;

-- dispatch (018) for proxy `sid`: the NOTIFYs of its own bindings are inserted claimed (`sent`),
-- the others queued (and their proxies woken). Returns how many rows it inserted and the ids of
-- those it claimed.
CREATE FUNCTION autoprov.dispatch_claiming(ids bigint[], sid integer,
                                           OUT inserted integer, OUT claimed bigint[])
LANGUAGE plpgsql
SET join_collapse_limit = 1 SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
AS $$
DECLARE
    queued integer;
BEGIN
    WITH ins AS (
        INSERT INTO autoprov.resync_notify
            (request_id, attempt, line_no, subscriber_id, aor, ruid, contact, received, socket,
             server_id, credential, state, sent_at)
        SELECT r.id, r.attempts + 1, l.line_no, s.id, s.username || '@' || s.domain, loc.ruid,
               loc.contact, NULLIF(loc.received, ''), loc.socket, loc.server_id,
               CASE WHEN p.subscriber_id IS NULL THEN 'current' ELSE 'previous' END,
               CASE WHEN loc.server_id = sid THEN 'sent' ELSE 'queued' END,
               CASE WHEN loc.server_id = sid THEN now() END
          FROM autoprov.resync_request r
          JOIN autoprov.device_line l ON l.device_id = r.device_id
          JOIN subscriber s ON s.id = l.subscriber_id
          JOIN location loc ON loc.username = s.username AND loc.domain = s.domain
                           AND loc.expires > localtimestamp
          LEFT JOIN autoprov.previous_password p ON p.subscriber_id = s.id
         WHERE r.id = ANY (ids)
        ON CONFLICT DO NOTHING
        RETURNING id, request_id, state
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
    SELECT (SELECT count(*) FROM ins),
           (SELECT array_agg(id ORDER BY id) FROM ins WHERE state = 'sent'),
           (SELECT count(*) FROM ins WHERE state = 'queued')
      INTO inserted, claimed, queued
      FROM (SELECT count(*) FROM upd) AS done;
    IF queued > 0 THEN
        PERFORM pg_notify('autoprov_resync', 'queued');
    END IF;
END $$;

-- The old entry points keep their meaning: everything queued, for whichever proxy.
CREATE OR REPLACE FUNCTION autoprov.dispatch(ids bigint[]) RETURNS integer
LANGUAGE sql AS $$
    SELECT inserted FROM autoprov.dispatch_claiming(ids, NULL)
$$;

CREATE OR REPLACE FUNCTION autoprov.dispatch_unchecked(max_requests integer DEFAULT 500)
RETURNS integer
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    ids bigint[] := autoprov.unchecked_requests(max_requests);
BEGIN
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM autoprov.dispatch(ids);
    RETURN cardinality(ids);
END $$;

-- Proxy `sid` dispatches unchecked requests until it has claimed `max_rows` NOTIFYs or none is
-- left, and gets what sending them needs: fewer rows than `max_rows` means no unchecked request
-- is left (requests without a binding, or with another proxy's, do not count).
-- Like the dispatch, its plan must not depend on statistics: from each NOTIFY claimed down the
-- indexes. (resync_notify grows by thousands of rows a second in a fan-out, faster than
-- autovacuum analyses it: taken for small, it was read whole for every batch, 47 ms each.)
CREATE FUNCTION autoprov.dispatch_and_claim(sid integer, max_rows integer)
RETURNS SETOF autoprov.notify_send_info
LANGUAGE plpgsql
SET join_collapse_limit = 1 SET enable_hashjoin = off SET enable_mergejoin = off
SET enable_seqscan = off SET jit = off
AS $$
DECLARE
    ids bigint[];
    got bigint[];
    claimed bigint[] := '{}';
BEGIN
    WHILE cardinality(claimed) < max_rows LOOP
        ids := autoprov.unchecked_requests(max_rows - cardinality(claimed));
        EXIT WHEN ids IS NULL;
        SELECT d.claimed INTO got FROM autoprov.dispatch_claiming(ids, sid) AS d;
        claimed := claimed || coalesce(got, '{}');
    END LOOP;
    RETURN QUERY SELECT * FROM autoprov.notify_send_info i WHERE i.id = ANY (claimed)
                  ORDER BY i.id;
END $$;

-- The requests a proxy's first batch found without a binding are looked at again once the
-- pending AORs are mirrored (kemi/resync.py, _RECHECK): found by this index, not by reading every
-- pending request of a fleet-wide resync.
CREATE INDEX resync_request_rechecked ON autoprov.resync_request (updated_at)
    WHERE state = 'pending' AND checked;

-- Every lookup of a request's NOTIFYs uses the unique index (request_id, attempt, ruid,
-- credential); this one only cost an entry per NOTIFY row.
DROP INDEX autoprov.resync_notify_request;

