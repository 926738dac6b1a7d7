"""autoprov's resync for a native kamailio.cfg: app_python3 loads this file, and the script
reaches each call of kemi/extension.py with python_exec (docs/embedding.md):

    python_exec("after_register");   # after save("location") answered 200
    python_exec("reply");            # in the core reply_route
    python_exec("tick");             # in the route an rtimer runs every 20 ms
"""

from __future__ import annotations

import KSR

from kemi import extension


class Embedded:
    def child_init(self, rank: int) -> int:
        return 0

    def after_register(self, msg: object) -> int:
        user, domain = KSR.pv.get("$tU"), KSR.pv.get("$td")
        if user and domain:
            extension.after_register(str(user), str(domain))
        return 1

    def reply(self, msg: object) -> int:
        extension.on_reply()
        return 1

    def tick(self, msg: object) -> int:
        extension.tick()
        return 1


def mod_init() -> object:
    return Embedded()
