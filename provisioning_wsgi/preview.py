"""`autoprov render`: the bytes a phone would get, without a phone or a certificate."""

from __future__ import annotations

from autoprov import db
from autoprov.config import Settings
from autoprov.mac import normalize
from provisioning_wsgi import store, vendors
from provisioning_wsgi.render import Rendered, Renderer


class PreviewError(ValueError):
    """The device or file asked for does not exist; the message says which."""


def render(settings: Settings, mac: str, *, bootstrap: bool = False,
           file: str | None = None) -> Rendered:
    mac = normalize(mac)
    with db.connect(settings) as conn:
        found = store.find_device_with_lines(conn, mac)
    if found is None:
        raise PreviewError(f"no device {mac}")
    device, lines, _snapshot = found
    vendor = vendors.get(device.vendor)
    if file is None:
        own = [f for f in vendor.files_for(device.model, mac)
               if (r := vendors.parse_as(vendor, f)) is not None and r.mac == mac]
        file = own[0]
    requested = vendors.parse_as(vendor, file) or vendors.parse(file)
    if requested is None:
        raise PreviewError(f"{file!r} is not a file name any supported phone asks for")
    if requested.vendor is not vendor:
        raise PreviewError(f"{file} is a {requested.vendor.name} file; device {mac} is a "
                           f"{vendor.name} phone")
    if requested.mac is not None and requested.mac != mac:
        raise PreviewError(f"{file} is the file of device {requested.mac}, not of {mac}")
    renderer = Renderer(settings)
    own_file = requested.mac is not None
    if bootstrap:
        return renderer.bootstrap(requested, device if own_file else None)
    return renderer.config(requested, device if own_file else None, lines if own_file else [])
