-- Every config a phone fetched from the provisioning service, one row per GET (200 or 304).
--
-- Append-only on purpose: a fleet's fetches only INSERT, so they never wait on each other (no
-- shared counter or "last fetch" row to update; the foreign key takes a shared KEY SHARE lock).
-- "Has the phone fetched its config since a change?" is
--   EXISTS (SELECT 1 FROM autoprov.config_fetch
--            WHERE device_id = $1 AND port = 'tls' AND fetched_at > $2)
-- and is answered from config_fetch_device_idx. That is approximate: now() is when a transaction
-- began, so a change committed after a fetch read the config can still look older than it.
-- Exactly: the fetch served the change iff
--   pg_visible_in_snapshot(<pg_current_xact_id() of the changing transaction>, read_snapshot)

CREATE TABLE autoprov.config_fetch (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id      bigint NOT NULL REFERENCES autoprov.device (id) ON DELETE CASCADE,
    -- tls: the full config on the HTTPS port; bootstrap: the generic one on the plain port.
    port           text NOT NULL CHECK (port IN ('tls', 'bootstrap')),
    file           text NOT NULL,
    -- The ETag served: a hash of the exact bytes the phone got.
    config_version text NOT NULL,
    client_addr    inet,
    user_agent     text,
    -- Start of the serving transaction, so never later than the read of the config it served.
    fetched_at     timestamptz NOT NULL DEFAULT now(),
    -- The snapshot the served config was read in (the same statement read it).
    read_snapshot  pg_snapshot NOT NULL DEFAULT pg_current_snapshot()
);
CREATE INDEX config_fetch_device_idx ON autoprov.config_fetch (device_id, port, fetched_at DESC);
-- For pruning by age.
CREATE INDEX config_fetch_fetched_at_idx ON autoprov.config_fetch (fetched_at);

-- Drops fetches older than `keep`, except each device's latest one per port (what `device show`
-- and the resync logic read). Returns the number of rows deleted.
CREATE FUNCTION autoprov.prune_config_fetch(keep interval) RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM autoprov.config_fetch f
         WHERE f.fetched_at < now() - keep
           AND EXISTS (SELECT 1 FROM autoprov.config_fetch n
                        WHERE n.device_id = f.device_id AND n.port = f.port
                          AND n.fetched_at > f.fetched_at)
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
