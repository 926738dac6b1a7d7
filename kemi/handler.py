"""Entry point that app_python3 loads (`modparam("app_python3", "load", ...)`).

`autoprov kamailio reload` (RPC app_python.reload) re-executes this file in every worker; Python
would keep the old submodules, so they are reloaded here, leaves first, before the router is
built again.
"""

import importlib
import sys

# Leaves first: a module is reloaded after everything it imports from the package.
SUBMODULES = ("kemi.sip", "kemi.db", "kemi.digest", "kemi.credentials", "kemi.bindings",
              "kemi.resync", "kemi.extension", "kemi.register", "kemi.media", "kemi.proxy",
              "kemi.router")

for _name in SUBMODULES:
    if _name in sys.modules:
        importlib.reload(sys.modules[_name])
    else:
        importlib.import_module(_name)


def mod_init() -> object:
    router = sys.modules["kemi.router"]
    return router.Router()
