"""Configs from templates: the generic bootstrap files and the full per-device ones.

Templates live in templates/<vendor>/<bootstrap|config>/<file kind>, optionally per model in
templates/<vendor>/<port>/<model>/<file kind>; a file of the same relative name under the
configured template_dir wins over the shipped one. The bootstrap renderer is never given a
line, so no bootstrap template can print a credential, whatever it says.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import threading
import time
import types
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jinja2

from autoprov import sipprobe
from autoprov.config import Settings
from autoprov.mac import colon_form
from provisioning_wsgi import firmware
from provisioning_wsgi.vendors import VENDORS
from provisioning_wsgi.vendors.base import Requested, Vendor

TEMPLATES = Path(__file__).resolve().parent / "templates"
BOOTSTRAP_PATH = "/device/autoprov/bootstrap/"
CONFIG_PATH = "/device/autoprov/config/"
# How often phones fetch their config unasked; a NOTIFY makes them fetch at once.
RESYNC_INTERVAL = timedelta(hours=24)
_SAFE_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# How often the template directories are looked at, instead of per render: Jinja's own check
# (auto_reload) stats every template and include on every render, and Jinja does not remember
# the per-model names it did not find (a stat and an exception each). The renderer is the one
# watcher of the files: renders and the rendered-config cache's listener thread ask it (see
# Renderer.check_templates), so an edited, new or removed file is seen within about this long.
TEMPLATE_RECHECK_S = 1.0
MAX_CHOICES = 4096

log = logging.getLogger("autoprov.provisioning")


class RenderError(RuntimeError):
    """A template could not be rendered (an operator's override is broken, most likely)."""


@dataclass(frozen=True)
class Device:
    id: int
    mac: str
    vendor: str
    model: str
    # The device's own SIP transport for its configs (NULL in SQL: sip_transport's).
    sip_transport: str | None = None


@dataclass(frozen=True)
class Line:
    number: int
    username: str
    domain: str
    password: str
    display_name: str

    @property
    def label(self) -> str:
        return self.display_name or self.username


@dataclass(frozen=True)
class Rendered:
    body: bytes
    content_type: str
    # What identifies these exact bytes: the ETag and config_fetch.config_version. Hashed once
    # (a cached config is served again and again). In the web front's own ETag form for a file
    # ("MTIME-SIZE" in hex): a published copy (provisioning_wsgi/publish.py) gets `stamp` as
    # its mtime, so the front serving it says the same ETag as the app rendering it.
    version: str = dataclasses.field(init=False, default="")
    stamp: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        stamp = int.from_bytes(hashlib.sha256(self.body).digest()[:4], "big")
        object.__setattr__(self, "stamp", stamp)
        object.__setattr__(self, "version", f"{stamp:x}-{len(self.body):x}")

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def urls(settings: Settings) -> dict[str, str]:
    """Where phones fetch from: the base URLs of the TLS and the plain port."""
    host = host_for_url(settings.public_host)
    return {
        "config": f"https://{host}:{settings.https_port}{CONFIG_PATH}",
        "bootstrap": f"http://{host}:{settings.http_port}{BOOTSTRAP_PATH}",
    }


SIP_TRANSPORTS = ("udp", "tcp", "tls")


def sip_servers(settings: Settings) -> dict[str, dict[str, Any]]:
    """Where phones send SIP, per transport the proxy listens on: public_host and the port of
    the first socket of that transport. Key "": sip_transport's (the first socket's if unset)."""
    servers: dict[str, dict[str, Any]] = {}
    host = settings.public_host
    for address in settings.sip_listen:
        try:
            proto, _host, port = sipprobe.parse_listen(address)
        except ValueError:
            continue
        if proto in SIP_TRANSPORTS and proto not in servers:
            servers[proto] = {"host": host, "port": port, "transport": proto,
                              "hostport": f"{host_for_url(host)}:{port}"}
    default = settings.sip_transport or next(iter(servers), "udp")
    servers[""] = servers.get(default) or {"host": host, "port": 5060, "transport": default,
                                           "hostport": f"{host_for_url(host)}:5060"}
    return servers


def template_files(roots: list[Path]) -> Hashable:
    """Every directory and file under the roots with its mtime: what a change shows in (an edit,
    a new per-model file, a removed override)."""
    seen: list[tuple[str, int]] = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for path in (dirpath, *(os.path.join(dirpath, name) for name in files)):
                try:
                    seen.append((path, os.stat(path).st_mtime_ns))
                except OSError:  # removed while we looked: the next look sees it gone
                    continue
    return tuple(sorted(seen))


def template_roots(settings: Settings) -> list[Path]:
    """Where templates are looked up, first match wins: the operator's, then the shipped ones."""
    return [*([Path(settings.template_dir)] if settings.template_dir else []), TEMPLATES]


def _environment(vendor: Vendor, roots: list[Path]) -> jinja2.Environment:
    return jinja2.Environment(  # noqa: S701 - not HTML: finalize escapes per vendor format
        loader=jinja2.FileSystemLoader(roots),
        finalize=vendor.escape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # Renderer.check_templates looks at the files instead
    )


class Renderer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._roots = template_roots(settings)
        # Firmware too: a new image in firmware_dir changes the configs that name it.
        self._watched = [*self._roots,
                         *([Path(settings.firmware_dir)] if settings.firmware_dir else [])]
        host = host_for_url(settings.public_host)
        self._firmware_base = f"https://{host}:{settings.https_port}"
        self._environments = {name: _environment(vendor, self._roots)
                              for name, vendor in VENDORS.items()}
        self._urls = urls(settings)
        # Settings do not change while the renderer lives; read-only, as every render shares it.
        self._sip: dict[str, Mapping[str, Any]] = {
            proto: types.MappingProxyType(server)
            for proto, server in sip_servers(settings).items()}
        self._choices: dict[tuple[str, ...], jinja2.Template] = {}
        self._generation = 0
        self._files = template_files(self._watched)
        self._files_checked = time.monotonic()
        self._check_lock = threading.Lock()
        self._on_change: list[Callable[[], None]] = []

    def bootstrap(self, requested: Requested, device: Device | None) -> Rendered:
        """The generic file for the plain-HTTP port: it never sees a line."""
        return self._render(requested, "bootstrap", device, {})

    def config(self, requested: Requested, device: Device | None, lines: list[Line]) -> Rendered:
        """The full file for the TLS port."""
        extra: dict[str, Any] = {"sip": self._sip_for(device), "lines": lines,
                                 "firmware_url": self._firmware_url(device)}
        if device is not None:
            by_number = {line.number: line for line in lines}
            count = max([requested.vendor.line_slots, *by_number])
            extra["slots"] = [(n, by_number.get(n)) for n in range(1, count + 1)]
            self._warn_unrepresentable(requested.vendor, device, lines)
        return self._render(requested, "config", device, extra)

    def _firmware_url(self, device: Device | None) -> str | None:
        """The TLS URL of the device's model's firmware (provisioning_wsgi/firmware.py), if any."""
        if device is None:
            return None
        name = firmware.image(self.settings.firmware_dir, device.vendor, device.model)
        if name is None:
            return None
        return firmware.url(self._firmware_base, device.vendor, device.model, name)

    def _sip_for(self, device: Device | None) -> Mapping[str, Any]:
        """The device's own transport where the proxy listens on it, else sip_transport's."""
        wanted = device.sip_transport if device is not None else None
        if wanted and wanted not in self._sip:
            log.warning("device mac=%s sip_transport=%s: the proxy has no such socket "
                        "(sip_listen), its configs name %s", device.mac if device else "",
                        wanted, self._sip[""]["transport"])
        return self._sip.get(wanted or "", self._sip[""])

    def _render(self, requested: Requested, port: str, device: Device | None,
                extra: dict[str, Any]) -> Rendered:
        vendor = requested.vendor
        context: dict[str, Any] = {
            "file": requested.file,
            "vendor": vendor.name,
            "model": device.model if device else requested.model,
            "mac": device.mac if device else None,
            "mac_upper": device.mac.upper() if device else None,
            "mac_colon": colon_form(device.mac) if device else None,
            "urls": self._urls,
            "resync": {
                "seconds": int(RESYNC_INTERVAL.total_seconds()),
                "minutes": int(RESYNC_INTERVAL.total_seconds()) // 60,
            },
            **extra,
        }
        names = [f"{vendor.name}/{port}/{requested.template}"]
        if device is not None and _SAFE_MODEL.match(device.model):
            names.insert(0, f"{vendor.name}/{port}/{device.model}/{requested.template}")
        self.check_templates()
        try:
            text = self._template(vendor.name, names).render(context)
        except jinja2.TemplateError as exc:
            raise RenderError(f"template {names[-1]}: {exc}") from exc
        return Rendered(vendor.finish(text), vendor.content_type)

    def on_templates_changed(self, callback: Callable[[], None]) -> None:
        """Call `callback` after the templates changed on disk (the config cache empties)."""
        self._on_change.append(callback)

    def check_templates(self) -> None:
        """At most once per TEMPLATE_RECHECK_S, look at the template directories; on any change
        forget every loaded template and every choice of file, then tell the listeners.

        Forgetting comes first, so whatever is rendered after a listener has acted is rendered
        from the new files."""
        if time.monotonic() - self._files_checked < TEMPLATE_RECHECK_S:
            return
        with self._check_lock:  # one walk per period, whichever thread comes first
            now = time.monotonic()
            if now - self._files_checked < TEMPLATE_RECHECK_S:
                return
            self._files_checked = now
            files = template_files(self._watched)
            if files == self._files:
                return
            self._files = files
        log.info("templates changed on disk: templates loaded again, cached configs dropped")
        self._generation += 1
        self._choices = {}
        for environment in self._environments.values():
            if environment.cache is not None:
                environment.cache.clear()
        for callback in self._on_change:
            callback()

    def _template(self, vendor: str, names: list[str]) -> jinja2.Template:
        key = (vendor, *names)
        chosen = self._choices.get(key)
        if chosen is not None:
            return chosen
        generation = self._generation
        template = self._environments[vendor].select_template(names)
        choices = self._choices
        if generation == self._generation:  # not a choice made before a change was seen
            if len(choices) >= MAX_CHOICES:  # models come from the database: bound it
                choices.clear()
            choices[key] = template
        return template

    @staticmethod
    def _warn_unrepresentable(vendor: Vendor, device: Device, lines: list[Line]) -> None:
        for line in lines:
            for field in ("username", "password"):
                if not vendor.representable(getattr(line, field)):
                    # The value itself is never logged.
                    log.warning("device %s line %d: the %s holds characters a %s config cannot"
                                " carry; the phone gets it altered", device.mac, line.number,
                                field, vendor.name)
