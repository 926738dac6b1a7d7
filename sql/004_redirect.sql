-- Zero-touch redirect registration (Yealink RPS, Panasonic RCS): a durable outbox. Creating,
-- re-MACing or deleting a device writes a job in the same transaction; workers (autoprov
-- redirect worker, autoprov serve) call the vendor later, so a device write never waits on one.

-- Which redirect service a vendor's phones ask after a factory reset; NULL: none. The name
-- selects the adapter in autoprov/redirect/registry.py.
ALTER TABLE autoprov.vendor ADD COLUMN redirect_service text
    CHECK (redirect_service ~ '^[a-z0-9-]+$');
UPDATE autoprov.vendor SET redirect_service = 'yealink-rps' WHERE name = 'yealink';
UPDATE autoprov.vendor SET redirect_service = 'panasonic-rcs' WHERE name = 'panasonic';

CREATE TABLE autoprov.redirect_job (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service         text NOT NULL,
    -- No foreign keys: a deregistration outlives its device.
    vendor          text NOT NULL,
    mac             text NOT NULL CHECK (mac ~ '^[0-9a-f]{12}$'),
    action          text NOT NULL CHECK (action IN ('register', 'deregister')),
    -- pending: to do (now or at next_attempt_at); done: the vendor did it; failed: the vendor
    -- refused for good (see outcome, reason; `autoprov redirect retry MAC` queues it again);
    -- skipped: the service is not configured; superseded: a newer job for the MAC replaced it.
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'done', 'failed', 'skipped', 'superseded')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The last answer, mapped (registered, not_found, invalid_mac, owned_by_other, invalid_url,
    -- auth_failed, rejected, temporary), and in the vendor's own words.
    outcome         text,
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX redirect_job_due ON autoprov.redirect_job (next_attempt_at, id)
    WHERE state = 'pending';
CREATE INDEX redirect_job_mac ON autoprov.redirect_job (mac, service, id);

CREATE FUNCTION autoprov.redirect_enqueue(p_vendor text, p_mac text, p_action text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    svc text;
    jid bigint;
BEGIN
    SELECT redirect_service INTO svc FROM autoprov.vendor WHERE name = p_vendor;
    IF svc IS NULL THEN
        RETURN NULL;
    END IF;
    -- The newest job decides the MAC's fate, so older waiting ones are moot. A job a worker is
    -- running is row-locked: skip it rather than wait for the vendor; workers run it first.
    UPDATE autoprov.redirect_job SET state = 'superseded', updated_at = now()
     WHERE id IN (SELECT id FROM autoprov.redirect_job
                   WHERE service = svc AND mac = p_mac
                     AND state IN ('pending', 'failed', 'skipped')
                     FOR UPDATE SKIP LOCKED);
    INSERT INTO autoprov.redirect_job (service, vendor, mac, action)
    VALUES (svc, p_vendor, p_mac, p_action) RETURNING id INTO jid;
    -- Delivered at commit: workers LISTEN and start at once.
    PERFORM pg_notify('autoprov_redirect', svc);
    RETURN jid;
END $$;

CREATE FUNCTION autoprov.device_redirect_after() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM autoprov.redirect_enqueue(OLD.vendor, OLD.mac, 'deregister');
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM autoprov.redirect_enqueue(NEW.vendor, NEW.mac, 'register');
    ELSIF OLD.mac <> NEW.mac OR OLD.vendor <> NEW.vendor THEN
        PERFORM autoprov.redirect_enqueue(OLD.vendor, OLD.mac, 'deregister');
        PERFORM autoprov.redirect_enqueue(NEW.vendor, NEW.mac, 'register');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER device_redirect AFTER INSERT OR DELETE OR UPDATE OF mac, vendor
    ON autoprov.device FOR EACH ROW EXECUTE FUNCTION autoprov.device_redirect_after();

-- Devices that existed before this migration were never registered.
SELECT autoprov.redirect_enqueue(vendor, mac, 'register') FROM autoprov.device ORDER BY id;

-- Each device's registration as an operator sees it: the newest job for its MAC.
CREATE VIEW autoprov.device_redirect AS
SELECT d.mac, d.vendor, v.redirect_service AS service,
       CASE WHEN j.id IS NULL THEN 'not queued'
            WHEN j.state = 'done' THEN 'registered'
            ELSE j.state END AS status,
       j.outcome, j.reason, j.attempts, j.next_attempt_at, j.updated_at, j.id AS job_id
  FROM autoprov.device d
  JOIN autoprov.vendor v ON v.name = d.vendor AND v.redirect_service IS NOT NULL
  LEFT JOIN LATERAL (
        SELECT * FROM autoprov.redirect_job r
         WHERE r.service = v.redirect_service AND r.mac = d.mac AND r.state <> 'superseded'
         ORDER BY r.id DESC LIMIT 1) j ON true;

-- Queue the newest job for a MAC again after a permanent failure (or once the service is
-- configured); with no job yet, queue a registration for the device. Returns the job's id.
CREATE FUNCTION autoprov.redirect_retry(raw_mac text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    m text := autoprov.normalize_mac(raw_mac);
    job autoprov.redirect_job;
    dev autoprov.device;
BEGIN
    SELECT * INTO job FROM autoprov.redirect_job
     WHERE mac = m AND state <> 'superseded' ORDER BY id DESC LIMIT 1;
    IF job.id IS NULL THEN
        SELECT * INTO dev FROM autoprov.device WHERE mac = m;
        IF dev.id IS NOT NULL THEN
            job.id := autoprov.redirect_enqueue(dev.vendor, dev.mac, 'register');
        END IF;
        IF job.id IS NULL THEN
            RAISE EXCEPTION 'no redirect registration for %: no such device, or no redirect service for its vendor',
                m USING ERRCODE = 'no_data_found';
        END IF;
        RETURN job.id;
    END IF;
    IF job.state NOT IN ('failed', 'skipped') THEN
        RAISE EXCEPTION 'nothing to retry for %: its % job is %', m, job.action,
            CASE job.state WHEN 'done' THEN 'done' ELSE 'still pending' END
            USING ERRCODE = 'no_data_found';
    END IF;
    -- Workers lock only pending jobs, so this never waits on a vendor call.
    UPDATE autoprov.redirect_job
       SET state = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now()
     WHERE id = job.id AND state IN ('failed', 'skipped');
    PERFORM pg_notify('autoprov_redirect', job.service);
    RETURN job.id;
END $$;
