-- Four more vendors (issue 24): what makes them valid in autoprov.device, and the check-sync
-- Event each obeys. Snom honours `reboot=false` (and the config sets checksync_action=sync);
-- Poly re-reads its files on `check-sync` and reboots only when a change needs it
-- (voIpProt.SIP.specialEvent.checkSync.alwaysReboot=0 in its config); Grandstream and Fanvil
-- obey `check-sync` (Fanvil's config sets Notify Reboot 0). No redirect service is wired for them
-- yet (docs/vendors.md says which exist and which are publicly documented).
INSERT INTO autoprov.vendor (name, notify_event) VALUES
    ('snom', 'check-sync;reboot=false'),
    ('polycom', 'check-sync'),
    ('grandstream', 'check-sync'),
    ('fanvil', 'check-sync')
ON CONFLICT (name) DO NOTHING;
