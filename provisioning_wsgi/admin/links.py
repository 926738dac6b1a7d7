"""Addresses of the operators' pages, for the command line."""

from __future__ import annotations

import urllib.parse

from autoprov.config import Settings
from provisioning_wsgi.admin import queries
from provisioning_wsgi.render import host_for_url
from provisioning_wsgi.vendors import VENDORS

BOOTSTRAP_PAGE = "/admin/bootstrap"


def page_url(settings: Settings, path: str) -> str:
    return f"https://{host_for_url(settings.public_host)}:{settings.admin_port}{path}"


def bootstrap_page(settings: Settings, mac: str) -> str:
    """The browser bootstrap page, with the device already picked."""
    return page_url(settings, f"{BOOTSTRAP_PAGE}?{urllib.parse.urlencode({'mac': mac})}")


def bootstrap_hint(settings: Settings, conn: queries.Conn, mac: str) -> str | None:
    """The bootstrap page for a device that may need it, else None.

    Needed: its vendor's phones learn their provisioning URL from a browser (no redirect
    service), and no line of it is registered, so a NOTIFY cannot reach it.
    """
    device = queries.find_device(conn, mac)
    vendor = VENDORS.get(device["vendor"]) if device else None
    if vendor is None or not vendor.browser_bootstrap or queries.registered(conn, mac):
        return None
    return bootstrap_page(settings, mac)
