-- Phones that asked for a device file nobody created (issue 24): remembered, never created.
-- The provisioning service notes them in batches (provisioning_wsgi/cache.py FetchWriter, at most
-- one statement a second); `autoprov device unknown` and the operators' page list them, and the
-- page's "adopt" opens the device form with MAC, vendor and model filled in.
-- Bounded, so that a scan cannot fill the database: at most 100 MACs per client address, and the
-- 10,000 seen most recently in all; a device created for a MAC removes its row.
CREATE TABLE autoprov.unknown_device (
    mac         text PRIMARY KEY CHECK (mac ~ '^[0-9a-f]{12}$'),
    vendor      text NOT NULL,
    model       text,
    firmware    text,
    user_agent  text,
    address     text,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    fetch_count bigint NOT NULL DEFAULT 1
);
CREATE INDEX unknown_device_last_seen ON autoprov.unknown_device (last_seen);
CREATE INDEX unknown_device_address ON autoprov.unknown_device (address);

CREATE FUNCTION autoprov.note_unknown_devices(
    macs text[], vendors text[], models text[], firmwares text[], agents text[],
    addresses text[], counts bigint[], firsts double precision[], lasts double precision[],
    per_address integer DEFAULT 100, max_rows integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    noted integer;
BEGIN
    WITH seen AS (
        SELECT e.* FROM unnest(macs, vendors, models, firmwares, agents, addresses, counts,
                               firsts, lasts)
               AS e(mac, vendor, model, firmware, agent, address, n, first_at, last_at)
         WHERE e.mac ~ '^[0-9a-f]{12}$'
           AND NOT EXISTS (SELECT 1 FROM autoprov.device d WHERE d.mac = e.mac)
    ), known AS (
        UPDATE autoprov.unknown_device u
           SET last_seen = greatest(u.last_seen, to_timestamp(s.last_at)),
               fetch_count = u.fetch_count + s.n,
               vendor = s.vendor, model = coalesce(s.model, u.model),
               firmware = coalesce(s.firmware, u.firmware),
               user_agent = coalesce(s.agent, u.user_agent), address = s.address
          FROM seen s
         WHERE u.mac = s.mac
        RETURNING u.mac
    ), fresh AS (
        -- New MACs: no more than per_address from one address, this batch included.
        SELECT s.*, row_number() OVER (PARTITION BY s.address ORDER BY s.first_at) AS nth
          FROM seen s
         WHERE s.mac NOT IN (SELECT mac FROM known)
    )
    INSERT INTO autoprov.unknown_device
        (mac, vendor, model, firmware, user_agent, address, first_seen, last_seen, fetch_count)
    SELECT f.mac, f.vendor, f.model, f.firmware, f.agent, f.address, to_timestamp(f.first_at),
           to_timestamp(f.last_at), f.n
      FROM fresh f
     WHERE f.nth + (SELECT count(*) FROM autoprov.unknown_device x
                     WHERE x.address IS NOT DISTINCT FROM f.address) <= per_address
    ON CONFLICT (mac) DO NOTHING;
    GET DIAGNOSTICS noted = ROW_COUNT;
    DELETE FROM autoprov.unknown_device
     WHERE mac IN (SELECT mac FROM autoprov.unknown_device
                    ORDER BY last_seen DESC OFFSET max_rows);
    RETURN noted;
END $$;

CREATE FUNCTION autoprov.device_adopted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM autoprov.unknown_device WHERE mac = NEW.mac;
    RETURN NULL;
END $$;
CREATE TRIGGER device_adopted AFTER INSERT ON autoprov.device
    FOR EACH ROW EXECUTE FUNCTION autoprov.device_adopted();
