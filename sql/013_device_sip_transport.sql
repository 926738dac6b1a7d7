-- A device's own SIP transport for the configs it is served (udp, tcp or tls; NULL: the
-- sip_transport setting's). Changing it changes the device's config: the device resyncs, as for
-- a new model.
ALTER TABLE autoprov.device
    ADD COLUMN sip_transport text CHECK (sip_transport IN ('udp', 'tcp', 'tls'));

CREATE OR REPLACE FUNCTION autoprov.device_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.mac, OLD.vendor, OLD.model, OLD.sip_transport)
       IS DISTINCT FROM (NEW.mac, NEW.vendor, NEW.model, NEW.sip_transport) THEN
        PERFORM autoprov.request_device_resync(NEW.id, 'config-change');
    END IF;
    RETURN NULL;
END $$;
