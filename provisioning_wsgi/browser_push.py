"""The request a browser sends a phone to make it fetch its config (Cisco SPA bootstrap).

A vendor with Vendor.browser_bootstrap describes it in templates/<vendor>/browser/resync.toml,
optionally per model in templates/<vendor>/browser/<model>/resync.toml; a file at the same
relative path under template_dir wins (as for config templates). The first file found is used
whole. The phone's address is only known in the browser, so {phone} stays in the URL for the
page's script to fill in.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from autoprov.config import Settings
from provisioning_wsgi.render import template_roots, urls
from provisioning_wsgi.vendors import VENDORS

FILE = "resync.toml"
PHONE = "{phone}"
_SAFE_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_URL = re.compile(r"^https?://\{phone\}(?:/[^\s{}]*)?$")


class BrowserPushError(ValueError):
    """A vendor's browser push file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class Push:
    method: str  # GET or POST
    url: str  # with {phone} in place of the phone's address
    params: tuple[str, ...]
    source: Path

    @property
    def query(self) -> str:
        """GET: what follows the "?", as it is (an SPA reads the profile URL from it raw)."""
        return "&".join(self.params)

    @property
    def fields(self) -> list[tuple[str, str]]:
        """POST: the form fields; a lone NAME gets 0, as in the reference system."""
        pairs = [p.split("=", 1) for p in self.params]
        return [(p[0], p[1] if len(p) == 2 else "0") for p in pairs]


def _candidates(settings: Settings, vendor: str, model: str) -> list[Path]:
    names = [Path(vendor, "browser", FILE)]
    if _SAFE_MODEL.match(model):
        names.insert(0, Path(vendor, "browser", model, FILE))
    return [root / name for name in names for root in template_roots(settings)]


def _substitute(text: str, values: dict[str, str]) -> str:
    # Plain replacement, not str.format: "$MA" and any other brace stay as written.
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def load(settings: Settings, vendor: str, model: str, mac: str) -> Push | None:
    """The push for this device; None if its vendor is not bootstrapped from a browser."""
    module = VENDORS.get(vendor)
    if module is None or not module.browser_bootstrap:
        return None
    path = next((p for p in _candidates(settings, vendor, model) if p.is_file()), None)
    if path is None:
        raise BrowserPushError(f"no {vendor}/browser/{FILE} in the templates")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BrowserPushError(f"{path}: {exc}") from None
    method, url, params = data.get("method"), data.get("url"), data.get("params")
    if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
        raise BrowserPushError(f"{path}: method must be GET or POST")
    if not isinstance(url, str) or not _URL.match(url):
        raise BrowserPushError(f"{path}: url must be http://{PHONE}/... or https://{PHONE}/...")
    if not (isinstance(params, list) and all(isinstance(p, str) and p for p in params)):
        raise BrowserPushError(f"{path}: params must be a list of non-empty strings")
    values = {f"{port}_url": base for port, base in urls(settings).items()}
    values["mac"] = mac
    return Push(method.upper(), url, tuple(_substitute(p, values) for p in params), path)
