-- Devices and their lines. A line ties a device's line number to a Kamailio subscriber.

CREATE FUNCTION autoprov.normalize_mac(raw text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    t text := lower(btrim(raw, E' \t\r\n'));
BEGIN
    IF t ~ '^[0-9a-f]{12}$'
       OR t ~ '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$'
       OR t ~ '^[0-9a-f]{2}(-[0-9a-f]{2}){5}$'
       OR t ~ '^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$' THEN
        RETURN regexp_replace(t, '[^0-9a-f]', '', 'g');
    END IF;
    RAISE EXCEPTION 'invalid MAC address %', quote_literal(raw)
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'use 12 hex digits, e.g. 00:15:65:aa:bb:cc, 00-15-65-aa-bb-cc, 0015.65aa.bbcc or 001565aabbcc';
END $$;

-- The vendors this system knows; a row here is what makes a vendor valid.
CREATE TABLE autoprov.vendor (
    name text PRIMARY KEY
);
INSERT INTO autoprov.vendor (name) VALUES ('cisco'), ('panasonic'), ('yealink');

CREATE TABLE autoprov.device (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mac         text NOT NULL UNIQUE CHECK (mac ~ '^[0-9a-f]{12}$'),
    vendor      text NOT NULL REFERENCES autoprov.vendor (name),
    model       text NOT NULL CHECK (btrim(model) <> ''),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION autoprov.device_before_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.mac := autoprov.normalize_mac(NEW.mac);
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER device_before_write BEFORE INSERT OR UPDATE ON autoprov.device
    FOR EACH ROW EXECUTE FUNCTION autoprov.device_before_write();

CREATE TABLE autoprov.device_line (
    device_id     bigint NOT NULL REFERENCES autoprov.device (id) ON DELETE CASCADE,
    line_no       integer NOT NULL CHECK (line_no BETWEEN 1 AND 64),
    -- RESTRICT: deleting a subscriber that a phone still uses is an error, not a silent loss.
    subscriber_id integer NOT NULL REFERENCES subscriber (id) ON DELETE RESTRICT,
    display_name  text NOT NULL DEFAULT '',
    PRIMARY KEY (device_id, line_no)
);
CREATE INDEX device_line_subscriber_idx ON autoprov.device_line (subscriber_id);
