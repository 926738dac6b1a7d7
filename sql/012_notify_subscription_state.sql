-- The Subscription-State our unsolicited check-sync NOTIFY carries, per vendor (RFC 6665 makes
-- the header mandatory in a NOTIFY; there is no subscription behind this one). `active` is what
-- the reference system sends to every phone it resyncs (handbook A.6.1.2), Cisco SPA, Panasonic
-- and Yealink included; Asterisk and FreeSWITCH send `terminated`. A DBA can change a vendor's
-- value with plain SQL; the next NOTIFY carries it.
ALTER TABLE autoprov.vendor
    ADD COLUMN notify_subscription_state text NOT NULL DEFAULT 'active'
    CHECK (notify_subscription_state ~ '^(active|pending|terminated)(;[a-z-]+=[A-Za-z0-9-]+)*$');

CREATE OR REPLACE VIEW autoprov.notify_send_info AS
SELECT n.id, n.aor, n.contact, n.received, n.socket, d.vendor, d.model, v.notify_event AS event,
       s.username::text AS username,
       (CASE WHEN n.credential = 'previous' THEN p.password ELSE s.password END)::text
           AS password,
       v.notify_subscription_state AS subscription_state
  FROM autoprov.resync_notify n
  JOIN autoprov.resync_request r ON r.id = n.request_id
  JOIN autoprov.device d ON d.id = r.device_id
  JOIN autoprov.vendor v ON v.name = d.vendor
  JOIN subscriber s ON s.id = n.subscriber_id
  LEFT JOIN autoprov.previous_password p ON p.subscriber_id = n.subscriber_id;
