"""The KEMI handler object: one class, one method per route (Kamailio's KEMI example shape)."""

from __future__ import annotations

import KSR

from kemi import ban, bindings, credentials, register, resync
from kemi.sip import reply

ALLOW = "Allow: REGISTER, OPTIONS"
KEEPALIVE_REASON = "Keepalive"


class Router:
    def child_init(self, rank: int) -> int:
        return 0

    def ksr_request_route(self, msg: object) -> int:
        if ban.source_banned() or ban.source_flooding():
            return 1  # no answer: a brute-forcing source learns nothing, and costs us nothing
        if KSR.maxfwd.process_maxfwd(10) < 0:
            reply(483, "Too Many Hops")
            return 1
        if KSR.sanity.sanity_check_defaults() < 0:
            return 1  # sanity has answered malformed requests itself
        # KSR.is_<METHOD>() compares the parsed method id: no pseudo-variable lookup or string
        # built for every message of a fleet's keepalives and refreshes.
        if KSR.is_REGISTER():
            register.handle()
        elif KSR.is_OPTIONS():
            reply(200, KEEPALIVE_REASON, ALLOW)
        elif KSR.is_ACK():
            pass  # nothing to acknowledge: we answer statelessly
        elif KSR.is_CANCEL():
            reply(481, "Call/Transaction Does Not Exist")
        else:
            # This proxy registers phones and sends them NOTIFYs; it routes no calls.
            reply(405, "Method Not Allowed", ALLOW)
        return 1

    def ksr_reply_route(self, msg: object) -> int:
        resync.on_reply()
        return 1  # non-zero: tm goes on with the reply

    def ksr_uac_event(self, msg: object, evname: str = "") -> int:
        resync.on_uac_event()
        return 1

    def ksr_resync_tick(self, msg: object, evname: str = "") -> int:
        resync.tick()
        credentials.tick()
        bindings.tick()
        return 1
