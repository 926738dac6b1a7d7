"""Where autoprov's own files are: in the source checkout, or where `make install` put them.

The packages (autoprov, kemi, provisioning_wsgi) sit side by side in both cases: at the top of
the checkout, or in site-packages. The SQL migrations and kamailio.cfg stay at the top of the
checkout (project layout) and are shipped in the wheel as data files, which pip installs in
share/autoprov/ under the environment's prefix. A checkout is recognised by its pyproject.toml,
so an editable install reads the checkout's files, never a copy.
"""

from __future__ import annotations

import importlib.metadata
import sysconfig
from pathlib import Path

# The folder holding the packages: the checkout's top, or site-packages when installed.
CODE_ROOT = Path(__file__).resolve().parent.parent
FROM_CHECKOUT = (CODE_ROOT / "pyproject.toml").is_file()
_SHARE = ("share", "autoprov")


def _installed_data_dir() -> Path:
    """share/autoprov as the installed wheel's RECORD places it.

    Asking the running interpreter (sysconfig) would be wrong inside Kamailio, whose embedded
    Python is the system's, not the venv's.
    """
    try:
        dist = importlib.metadata.distribution("autoprov")
        for file in dist.files or ():
            if file.parts[-3:] == (*_SHARE, "kamailio.cfg"):
                return Path(str(dist.locate_file(file))).resolve().parent
    except importlib.metadata.PackageNotFoundError:
        pass
    return Path(sysconfig.get_path("data"), *_SHARE)


DATA_DIR = CODE_ROOT if FROM_CHECKOUT else _installed_data_dir()
SQL_DIR = DATA_DIR / "sql"
KAMAILIO_CFG = DATA_DIR / "kamailio.cfg"
# The configuration file when AUTOPROV_CONFIG is unset: the checkout's, or the system's.
DEFAULT_CONFIG = CODE_ROOT / "autoprov.toml" if FROM_CHECKOUT else \
    Path("/etc/autoprov/autoprov.toml")
