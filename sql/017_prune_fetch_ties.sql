-- Fetches the web front answered from published files (issue 19) carry nginx's request time,
-- which has millisecond resolution: a phone's requests on one kept-alive connection can share
-- a fetched_at. Pruning kept every row tied for a device's latest per port; now the latest is
-- the one with the highest (fetched_at, id), and only that one stays.
CREATE OR REPLACE FUNCTION autoprov.prune_config_fetch(keep interval) RETURNS bigint
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM autoprov.config_fetch f
         WHERE f.fetched_at < now() - keep
           AND EXISTS (SELECT 1 FROM autoprov.config_fetch n
                        WHERE n.device_id = f.device_id AND n.port = f.port
                          AND (n.fetched_at, n.id) > (f.fetched_at, f.id))
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
