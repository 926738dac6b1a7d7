-- Resync: durable requests (one per device change or ask) and one row per NOTIFY sent to a
-- registered contact, with its outcome. Kamailio dispatches and sends them; SQL only records.

-- The Event header each vendor's phones act on (per-model overrides live in configuration).
ALTER TABLE autoprov.vendor ADD COLUMN notify_event text NOT NULL DEFAULT 'check-sync';
UPDATE autoprov.vendor SET notify_event = 'check-sync;reboot=false' WHERE name = 'yealink';

CREATE TABLE autoprov.resync_request (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   bigint NOT NULL REFERENCES autoprov.device (id) ON DELETE CASCADE,
    reason      text NOT NULL,
    -- pending: nothing sent yet (no registered contact, or not yet dispatched);
    -- sending: NOTIFYs out; done: every NOTIFY has an outcome; failed: gave up (never answered).
    state       text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'sending', 'done', 'failed')),
    -- false until a proxy has looked for contacts; a pending, checked request waits for REGISTER.
    checked     boolean NOT NULL DEFAULT false,
    attempts    integer NOT NULL DEFAULT 0,
    -- The transaction of the latest change this request stands for: a config fetch whose
    -- snapshot sees it has delivered the change (timestamps cannot tell, see 005).
    changed_xact xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Duplicate requests coalesce: at most one pending request per device.
CREATE UNIQUE INDEX resync_request_one_pending ON autoprov.resync_request (device_id)
    WHERE state = 'pending';
CREATE INDEX resync_request_unchecked ON autoprov.resync_request (id)
    WHERE state = 'pending' AND NOT checked;
CREATE INDEX resync_request_device ON autoprov.resync_request (device_id, id DESC);
CREATE INDEX resync_request_sending ON autoprov.resync_request (device_id) WHERE state = 'sending';

CREATE TABLE autoprov.resync_notify (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id    bigint NOT NULL REFERENCES autoprov.resync_request (id) ON DELETE CASCADE,
    attempt       integer NOT NULL,
    line_no       integer NOT NULL,
    subscriber_id integer NOT NULL,
    aor           text NOT NULL,
    ruid          text NOT NULL,          -- the location binding notified
    contact       text NOT NULL,
    received      text,
    socket        text,
    server_id     integer NOT NULL,       -- the proxy the binding registered through sends it
    credential    text NOT NULL DEFAULT 'current' CHECK (credential IN ('current', 'previous')),
    state         text NOT NULL DEFAULT 'queued' CHECK (state IN
                  ('queued', 'sent', 'accepted', 'refused', 'challenge_failed', 'no_answer')),
    challenged    boolean NOT NULL DEFAULT false,
    code          integer,
    queued_at     timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,
    answered_at   timestamptz,
    UNIQUE (request_id, attempt, ruid, credential)
);
CREATE INDEX resync_notify_queued ON autoprov.resync_notify (server_id, id) WHERE state = 'queued';
CREATE INDEX resync_notify_sent ON autoprov.resync_notify (sent_at) WHERE state = 'sent';
CREATE INDEX resync_notify_request ON autoprov.resync_notify (request_id);

-- A rotated password stays usable until the phone has fetched a config carrying the new one.
CREATE TABLE autoprov.previous_password (
    subscriber_id integer PRIMARY KEY REFERENCES subscriber (id) ON DELETE CASCADE,
    password      text NOT NULL,
    -- The latest rotation: the phone may drop the old password once it fetched a config that
    -- includes this transaction.
    replaced_xact xid8 NOT NULL DEFAULT pg_current_xact_id(),
    replaced_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION autoprov.request_device_resync(dev bigint, why text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    rid bigint;
BEGIN
    INSERT INTO autoprov.resync_request (device_id, reason) VALUES (dev, why)
    ON CONFLICT (device_id) WHERE state = 'pending'
    DO UPDATE SET checked = false, changed_xact = pg_current_xact_id(), updated_at = now()
    RETURNING id INTO rid;
    -- Delivered at commit; the proxies LISTEN and dispatch within a tick.
    PERFORM pg_notify('autoprov_resync', '');
    RETURN rid;
END $$;

CREATE FUNCTION autoprov.request_resync(mac text, why text DEFAULT 'sql') RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    dev bigint;
BEGIN
    SELECT id INTO dev FROM autoprov.device WHERE device.mac = autoprov.normalize_mac($1);
    IF dev IS NULL THEN
        RAISE EXCEPTION 'no device %', autoprov.normalize_mac($1) USING ERRCODE = 'no_data_found';
    END IF;
    RETURN autoprov.request_device_resync(dev, why);
END $$;

-- Queue one NOTIFY per live binding of the lines of each request's device, in one statement
-- for the whole batch (a fan-out to thousands of phones is one INSERT, not thousands). The
-- caller has locked the requests. Requests with no live binding stay pending, now checked.
CREATE FUNCTION autoprov.dispatch(ids bigint[]) RETURNS integer
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
        PERFORM pg_notify('autoprov_resync', '');
    END IF;
    RETURN queued;
END $$;

-- A device whose NOTIFYs are still out gets no second round until they are answered: the
-- phone is fetching anyway, and the fetch may make the newer request unnecessary (005).
CREATE FUNCTION autoprov.resync_in_flight(dev bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM autoprov.resync_request
                    WHERE device_id = dev AND state = 'sending')
$$;

-- A proxy's tick: look for contacts of up to `max_requests` requests nobody has checked yet.
-- Returns how many requests it took (the caller sends, then comes back for more).
CREATE FUNCTION autoprov.dispatch_unchecked(max_requests integer DEFAULT 500) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
BEGIN
    SELECT array_agg(id) INTO ids FROM (
        SELECT r.id FROM autoprov.resync_request r
         WHERE r.state = 'pending' AND NOT r.checked
           AND NOT autoprov.resync_in_flight(r.device_id)
         ORDER BY r.id LIMIT max_requests FOR UPDATE SKIP LOCKED) AS picked;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM autoprov.dispatch(ids);
    RETURN cardinality(ids);
END $$;

-- Right after a REGISTER of an AOR that has a pending request: queue its NOTIFYs.
CREATE FUNCTION autoprov.dispatch_for_aor(uname text, dom text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
BEGIN
    SELECT array_agg(id) INTO ids FROM (
        SELECT r.id FROM autoprov.resync_request r
          JOIN autoprov.device_line l ON l.device_id = r.device_id
          JOIN subscriber s ON s.id = l.subscriber_id
         WHERE r.state = 'pending' AND s.username = uname AND s.domain = dom
           AND NOT autoprov.resync_in_flight(r.device_id)
         FOR UPDATE OF r SKIP LOCKED) AS picked;
    RETURN CASE WHEN ids IS NULL THEN 0 ELSE autoprov.dispatch(ids) END;
END $$;

-- The AORs whose next REGISTER should trigger a NOTIFY (the proxies keep them in memory).
CREATE VIEW autoprov.resync_pending_aor AS
SELECT DISTINCT s.username || '@' || s.domain AS aor
  FROM autoprov.resync_request r
  JOIN autoprov.device_line l ON l.device_id = r.device_id
  JOIN subscriber s ON s.id = l.subscriber_id
 WHERE r.state = 'pending';

-- What sending one NOTIFY needs: where, which Event, and the credentials to answer a challenge.
CREATE VIEW autoprov.notify_send_info AS
SELECT n.id, n.aor, n.contact, n.received, n.socket, d.vendor, d.model, v.notify_event AS event,
       s.username::text AS username,
       (CASE WHEN n.credential = 'previous' THEN p.password ELSE s.password END)::text
           AS password
  FROM autoprov.resync_notify n
  JOIN autoprov.resync_request r ON r.id = n.request_id
  JOIN autoprov.device d ON d.id = r.device_id
  JOIN autoprov.vendor v ON v.name = d.vendor
  JOIN subscriber s ON s.id = n.subscriber_id
  LEFT JOIN autoprov.previous_password p ON p.subscriber_id = n.subscriber_id;

-- Claim this proxy's queued NOTIFYs (exactly once across proxies).
CREATE FUNCTION autoprov.claim_notifies(sid integer, max_rows integer, only_aor text DEFAULT NULL)
RETURNS SETOF autoprov.notify_send_info
LANGUAGE sql AS $$
    WITH claimed AS (
        UPDATE autoprov.resync_notify n SET state = 'sent', sent_at = now()
         WHERE n.id IN (SELECT q.id FROM autoprov.resync_notify q
                         WHERE q.state = 'queued' AND q.server_id = sid
                           AND (only_aor IS NULL OR q.aor = only_aor)
                         ORDER BY q.id LIMIT max_rows FOR UPDATE SKIP LOCKED)
        RETURNING n.id
    )
    SELECT i.* FROM autoprov.notify_send_info i WHERE i.id IN (SELECT id FROM claimed)
     ORDER BY i.id
$$;

-- Close a request once none of its NOTIFYs is in flight.
CREATE FUNCTION autoprov.settle_request(rid bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    req autoprov.resync_request;
BEGIN
    SELECT * INTO req FROM autoprov.resync_request WHERE resync_request.id = rid FOR UPDATE;
    IF req.state <> 'sending' OR EXISTS (
        SELECT 1 FROM autoprov.resync_notify
         WHERE request_id = rid AND state IN ('queued', 'sent')) THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM autoprov.resync_notify
                    WHERE request_id = rid AND attempt = req.attempts AND state <> 'no_answer')
    THEN
        -- Nobody answered: try again after the phone's next REGISTER, a bounded number of times.
        IF req.attempts >= 3 THEN
            UPDATE autoprov.resync_request SET state = 'failed', updated_at = now() WHERE id = rid;
        ELSIF NOT EXISTS (SELECT 1 FROM autoprov.resync_request
                           WHERE device_id = req.device_id AND state = 'pending') THEN
            UPDATE autoprov.resync_request SET state = 'pending', checked = true, updated_at = now()
             WHERE id = rid;
        ELSE
            UPDATE autoprov.resync_request SET state = 'failed', updated_at = now() WHERE id = rid;
        END IF;
    ELSE
        UPDATE autoprov.resync_request SET state = 'done', updated_at = now() WHERE id = rid;
    END IF;
    -- A request that waited for this one may go now.
    IF EXISTS (SELECT 1 FROM autoprov.resync_request
                WHERE device_id = req.device_id AND state = 'pending' AND id <> rid) THEN
        UPDATE autoprov.resync_request SET checked = false
         WHERE device_id = req.device_id AND state = 'pending' AND id <> rid;
        PERFORM pg_notify('autoprov_resync', '');
    END IF;
END $$;

-- Record what the phones answered, in batches: one statement per step for the whole batch (a
-- fan-out's thousands of replies). The proxy answers a first 401/407 itself (the retry carries
-- the line's credentials) and reports it as a `challenge`; a final 401/407, or a 403 after the
-- challenge (`after_challenge`), means the phone rejected our credentials. A batch may hold a
-- NOTIFY's challenge after its final answer: neither depends on the other being recorded first.
CREATE FUNCTION autoprov.record_notify_outcomes(nids bigint[], codes integer[],
                                                timeouts boolean[], challenges boolean[],
                                                after_challenges boolean[],
                                                answered double precision[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    answered_requests bigint[];
    done_ids bigint[];
    done_devices bigint[];
    retried integer;
    woken integer;
    rid bigint;
BEGIN
    UPDATE autoprov.resync_notify n SET challenged = true
      FROM unnest(nids, challenges) AS e(id, challenge)
     WHERE e.challenge AND n.id = e.id;

    WITH final AS (
        -- `answered`: when the proxy got the reply (epoch seconds), if it says.
        SELECT e.id, e.code, e.timed_out, e.after_challenge,
               coalesce(to_timestamp(e.at), now()) AS at
          FROM unnest(nids, codes, timeouts, challenges, after_challenges, answered)
               AS e(id, code, timed_out, challenge, after_challenge, at)
         WHERE NOT e.challenge
    ), answered AS (
        UPDATE autoprov.resync_notify n
           SET state = CASE
                   WHEN f.timed_out OR f.code = 408 THEN 'no_answer'
                   WHEN f.code IN (401, 407) OR (f.code = 403 AND f.after_challenge)
                       THEN 'challenge_failed'
                   WHEN f.code BETWEEN 200 AND 299 THEN 'accepted'
                   ELSE 'refused' END,
               code = f.code, answered_at = f.at,
               challenged = n.challenged OR f.after_challenge
          FROM final f
         WHERE n.id = f.id AND n.state = 'sent'
        RETURNING n.*
    ), retry AS (
        -- The phone refused the credential we tried: try the other one (password rotation).
        INSERT INTO autoprov.resync_notify
            (request_id, attempt, line_no, subscriber_id, aor, ruid, contact, received, socket,
             server_id, credential)
        SELECT a.request_id, a.attempt, a.line_no, a.subscriber_id, a.aor, a.ruid, a.contact,
               a.received, a.socket, a.server_id,
               CASE WHEN a.credential = 'current' THEN 'previous' ELSE 'current' END
          FROM answered a
         WHERE a.state = 'challenge_failed'
           AND EXISTS (SELECT 1 FROM autoprov.previous_password p
                        WHERE p.subscriber_id = a.subscriber_id)
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT array_agg(DISTINCT a.request_id), (SELECT count(*) FROM retry)
      INTO answered_requests, retried
      FROM answered a;

    -- The common end: nothing in flight any more and a contact answered: done.
    WITH done AS (
        UPDATE autoprov.resync_request r SET state = 'done', updated_at = now()
         WHERE r.id = ANY (answered_requests) AND r.state = 'sending'
           AND NOT EXISTS (SELECT 1 FROM autoprov.resync_notify q
                            WHERE q.request_id = r.id AND q.state IN ('queued', 'sent'))
           AND EXISTS (SELECT 1 FROM autoprov.resync_notify q
                        WHERE q.request_id = r.id AND q.attempt = r.attempts
                          AND q.state <> 'no_answer')
        RETURNING r.id, r.device_id
    )
    SELECT array_agg(id), array_agg(device_id) INTO done_ids, done_devices FROM done;
    -- A request that waited for one of these may go now.
    UPDATE autoprov.resync_request SET checked = false
     WHERE device_id = ANY (done_devices) AND state = 'pending';
    GET DIAGNOSTICS woken = ROW_COUNT;
    -- The rest (nobody answered, or other contacts still in flight): the general path.
    FOR rid IN SELECT x FROM unnest(answered_requests) AS x
                WHERE x <> ALL (coalesce(done_ids, '{}')) LOOP
        PERFORM autoprov.settle_request(rid);
    END LOOP;
    IF retried > 0 OR woken > 0 THEN
        PERFORM pg_notify('autoprov_resync', '');
    END IF;
    RETURN coalesce(cardinality(nids), 0);
END $$;

-- NOTIFYs whose answer never came back (lost transaction, proxy restarted): no answer.
CREATE FUNCTION autoprov.expire_notifies(older_than interval) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    n integer;
BEGIN
    SELECT array_agg(id) INTO ids FROM (
        SELECT id FROM autoprov.resync_notify
         WHERE state = 'sent' AND sent_at < now() - older_than
         FOR UPDATE SKIP LOCKED) AS lost;
    n := coalesce(cardinality(ids), 0);
    IF n > 0 THEN
        PERFORM autoprov.record_notify_outcomes(ids, array_fill(408, ARRAY[n]),
                                                array_fill(true, ARRAY[n]),
                                                array_fill(false, ARRAY[n]),
                                                array_fill(false, ARRAY[n]));
    END IF;
    RETURN n;
END $$;

-- What a DBA reads: the latest request per device and its NOTIFYs.
CREATE VIEW autoprov.resync_status AS
SELECT d.mac, r.id AS request_id, r.reason, r.state AS request_state, r.attempts,
       r.created_at, n.line_no, n.aor, n.contact, n.credential, n.state AS outcome, n.code,
       n.challenged, n.sent_at, n.answered_at
  FROM autoprov.resync_request r
  JOIN autoprov.device d ON d.id = r.device_id
  LEFT JOIN autoprov.resync_notify n ON n.request_id = r.id;

-- Changing what a device's config is made of makes the device resync by itself.
CREATE FUNCTION autoprov.device_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.mac, OLD.vendor, OLD.model) IS DISTINCT FROM (NEW.mac, NEW.vendor, NEW.model) THEN
        PERFORM autoprov.request_device_resync(NEW.id, 'config-change');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER device_changed AFTER UPDATE ON autoprov.device
    FOR EACH ROW EXECUTE FUNCTION autoprov.device_changed();

CREATE FUNCTION autoprov.device_line_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    dev bigint;
BEGIN
    FOR dev IN SELECT DISTINCT x FROM unnest(ARRAY[
                   CASE WHEN TG_OP <> 'INSERT' THEN OLD.device_id END,
                   CASE WHEN TG_OP <> 'DELETE' THEN NEW.device_id END]) AS x
                WHERE x IS NOT NULL
    LOOP
        -- A line deleted with its device (cascade) has no device left to resync.
        IF EXISTS (SELECT 1 FROM autoprov.device WHERE id = dev) THEN
            PERFORM autoprov.request_device_resync(dev, 'config-change');
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER device_line_changed AFTER INSERT OR UPDATE OR DELETE ON autoprov.device_line
    FOR EACH ROW EXECUTE FUNCTION autoprov.device_line_changed();

CREATE FUNCTION autoprov.subscriber_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    dev bigint;
BEGIN
    IF (OLD.username, OLD.domain, OLD.password) IS NOT DISTINCT FROM
       (NEW.username, NEW.domain, NEW.password) THEN
        RETURN NULL;
    END IF;
    IF OLD.password IS DISTINCT FROM NEW.password THEN
        -- Keep the password the phone still holds; a second rotation before the phone fetched
        -- its config keeps the first one, which is what the phone has, and waits for the newest.
        INSERT INTO autoprov.previous_password (subscriber_id, password)
        VALUES (OLD.id, OLD.password)
        ON CONFLICT (subscriber_id)
        DO UPDATE SET replaced_xact = pg_current_xact_id(), replaced_at = now();
        DELETE FROM autoprov.previous_password
         WHERE subscriber_id = NEW.id AND password = NEW.password;
    END IF;
    FOR dev IN SELECT DISTINCT device_id FROM autoprov.device_line WHERE subscriber_id = NEW.id
    LOOP
        PERFORM autoprov.request_device_resync(dev, 'config-change');
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER subscriber_changed AFTER UPDATE ON subscriber
    FOR EACH ROW EXECUTE FUNCTION autoprov.subscriber_changed();

-- Credentials a phone may still use while a password rotation is under way (the REGISTER path
-- tries these after the current password fails).
CREATE VIEW autoprov.previous_credentials AS
SELECT s.username, s.domain, p.password
  FROM autoprov.previous_password p JOIN subscriber s ON s.id = p.subscriber_id;
