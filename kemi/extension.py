"""autoprov's resync as an extension of an operator's own Kamailio script.

autoprov's own proxy (kemi/router.py) uses these same calls. An operator who keeps his own
routing, KEMI or native kamailio.cfg, adds three calls to it (docs/embedding.md):

- after_register(user, domain): after his registrar saved a binding and answered 200;
  a device of that line with a pending resync gets its check-sync at once.
- on_reply(): in the core reply route (every reply to a NOTIFY; a challenge is answered).
- tick(): every 20 ms from an rtimer process: dispatches requests SQL made, records outcomes;
  False when there was nothing to do (autoprov's own timer then sleeps until the database
  notifies it, up to IDLE_WAIT_S: wait_idle()).

What the calls need in kamailio.cfg (htables, the rtimer) is listed in
docs/embedding.md; the database URL and settings come from autoprov's configuration.
"""

from __future__ import annotations

from kemi import db, resync


def after_register(user: str, domain: str) -> None:
    resync.after_register(user, domain)


def on_reply() -> None:
    resync.on_reply()


def tick() -> bool:
    return resync.tick()


IDLE_WAIT_S = 0.1


def wait_idle() -> bool:
    """Sleep in the timer process until the database notifies (True: tick again now) or
    IDLE_WAIT_S passed: an idle proxy's timer wakes 10 times a second instead of 50, and a resync
    request is still dispatched at once."""
    return db.wait_for_notification(IDLE_WAIT_S)
