"""Firmware images: `firmware_dir/VENDOR/MODEL/FILE`, served by the web front itself (nginx:
ETag, Range, no Python worker for the length of a download) at
`/device/autoprov/firmware/VENDOR/MODEL/FILE` on both phone ports.

A model's firmware is the one regular file in its folder (the first by name if there are more;
docs/firmware.md). Configs name it only when it exists.
"""

from __future__ import annotations

import re
from pathlib import Path

PATH = "/device/autoprov/firmware/"
# Every part of a firmware URL: what nginx serves too (autoprov/front.py): no hidden files, no
# "..", nothing to escape in a URL.
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_NAME = re.compile(rf"^{NAME}$")


def image(firmware_dir: str, vendor: str, model: str) -> str | None:
    """The file name of this model's firmware, or None."""
    if not firmware_dir or not _NAME.match(vendor) or not _NAME.match(model):
        return None
    folder = Path(firmware_dir) / vendor / model
    try:
        names = sorted(entry.name for entry in folder.iterdir()
                       if _NAME.match(entry.name) and entry.is_file())
    except OSError:  # no folder for this model (the usual case)
        return None
    return names[0] if names else None


def url(base: str, vendor: str, model: str, name: str) -> str:
    """`base`: scheme, host and port of the port the config is served on."""
    return f"{base}{PATH}{vendor}/{model}/{name}"
