"""The KEMI handler object: one class, one method per route (Kamailio's KEMI example shape)."""

from __future__ import annotations

import KSR

from kemi import ban, bindings, credentials, extension, media, proxy, register
from kemi.sip import pv, reply

ALLOW = ("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, UPDATE, INFO, REFER, NOTIFY, "
         "PRACK, MESSAGE, SUBSCRIBE")
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
            return 1
        method = str(KSR.pv.get("$rm"))
        if method == "OPTIONS" and not pv("$rU"):
            reply(200, KEEPALIVE_REASON, ALLOW)  # a keepalive to the proxy itself
        else:
            proxy.route(method)  # calls and everything else a phone sends
        return 1

    def ksr_reply_route(self, msg: object) -> int:
        extension.on_reply()
        return 1  # non-zero: tm goes on with the reply

    def ksr_onreply_call(self, msg: object) -> int:
        proxy.on_reply()
        return 1

    def ksr_branch_media(self, msg: object) -> int:
        media.on_branch()
        return 1

    def ksr_failure_media(self, msg: object) -> int:
        media.on_failure()
        return 1

    def ksr_resync_tick(self, msg: object, evname: str = "") -> int:
        busy = extension.tick()
        credentials.tick()
        bindings.tick()
        if not busy and extension.wait_idle():
            extension.tick()  # woken by the database: a resync request, sent without delay
            credentials.tick()
        return 1
