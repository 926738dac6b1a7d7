"""An operator's own minimal KEMI script, with autoprov's resync in four calls."""

import KSR

from kemi import extension as autoprov


class Operator:
    def child_init(self, rank: int) -> int:
        return 0

    def ksr_request_route(self, msg: object) -> int:
        if not KSR.is_REGISTER():
            KSR.sl.sl_send_reply(404, "Not Here")
            return 1
        realm = KSR.pv.get("$td")
        if KSR.auth_db.auth_check(realm, "subscriber", 1) < 0:
            KSR.auth.auth_challenge(realm, 1)
            return 1
        if KSR.registrar.save("location", 0) < 0:
            KSR.sl.sl_reply_error()
            return 1
        autoprov.after_register(KSR.pv.get("$tU"), realm)
        return 1

    def ksr_reply_route(self, msg: object) -> int:
        autoprov.on_reply()
        return 1

    def ksr_autoprov_tick(self, msg: object, evname: str = "") -> int:
        autoprov.tick()
        return 1


def mod_init() -> object:
    return Operator()
