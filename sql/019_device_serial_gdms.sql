-- Grandstream's redirect service is its device management cloud, GDMS, whose API adds a device
-- by MAC *and* serial number (the label on the box; issue 24). Devices may carry one; a DBA sets
-- it with plain SQL as well as `autoprov device add --serial`.
ALTER TABLE autoprov.device ADD COLUMN serial_number text
    CHECK (serial_number ~ '^[A-Za-z0-9]{1,64}$');

UPDATE autoprov.vendor SET redirect_service = 'grandstream-gdms' WHERE name = 'grandstream';

-- A serial number given (or corrected) after the device was created registers it again: the
-- registration that failed for want of it, or went in with a wrong one, is done over. Vendors
-- whose service needs no serial number re-register idempotently.
CREATE OR REPLACE FUNCTION autoprov.device_redirect_after() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM autoprov.redirect_enqueue(OLD.vendor, OLD.mac, 'deregister');
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM autoprov.redirect_enqueue(NEW.vendor, NEW.mac, 'register');
    ELSIF OLD.mac <> NEW.mac OR OLD.vendor <> NEW.vendor THEN
        PERFORM autoprov.redirect_enqueue(OLD.vendor, OLD.mac, 'deregister');
        PERFORM autoprov.redirect_enqueue(NEW.vendor, NEW.mac, 'register');
    ELSIF NEW.serial_number IS NOT NULL
          AND OLD.serial_number IS DISTINCT FROM NEW.serial_number THEN
        PERFORM autoprov.redirect_enqueue(NEW.vendor, NEW.mac, 'register');
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER device_redirect ON autoprov.device;
CREATE TRIGGER device_redirect AFTER INSERT OR DELETE OR UPDATE OF mac, vendor, serial_number
    ON autoprov.device FOR EACH ROW EXECUTE FUNCTION autoprov.device_redirect_after();

-- Grandstream devices created before this migration were never registered (no adapter).
SELECT autoprov.redirect_enqueue(vendor, mac, 'register')
  FROM autoprov.device WHERE vendor = 'grandstream' ORDER BY id;
