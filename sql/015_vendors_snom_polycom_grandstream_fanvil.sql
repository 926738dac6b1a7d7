-- Four more vendors (issue 24): what makes them valid in autoprov.device, and the check-sync
-- Event each obeys. Snom honours `reboot=false` (and the config sets checksync_action=sync);
-- Poly re-reads its files on `check-sync` and reboots only when a change needs it
-- (voIpProt.SIP.specialEvent.checkSync.alwaysReboot=0 in its config); Grandstream and Fanvil
-- obey `check-sync` (Fanvil's config sets Notify Reboot 0). Snom's redirect service (SRAPS) has a
-- public API and an adapter (autoprov/redirect/snom.py); docs/vendors.md says why the others have
-- none yet.
INSERT INTO autoprov.vendor (name, notify_event, redirect_service) VALUES
    ('snom', 'check-sync;reboot=false', 'snom-sraps'),
    ('polycom', 'check-sync', NULL),
    ('grandstream', 'check-sync', NULL),
    ('fanvil', 'check-sync', NULL)
ON CONFLICT (name) DO NOTHING;
