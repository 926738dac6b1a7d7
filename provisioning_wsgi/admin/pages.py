"""The pages' HTML: Jinja2 templates in admin/templates, autoescaped, and the static files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2

from autoprov import resync
from autoprov.mac import colon_form
from autoprov.redirect import state as redirect_state

HERE = Path(__file__).resolve().parent
STATIC = {"admin.js": "text/javascript; charset=utf-8", "admin.css": "text/css; charset=utf-8"}


def when(value: object) -> str:
    """A timestamp for people: UTC, to the second."""
    if value is None or value == "":
        return "never"
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, dt.datetime):
        return str(value)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def port_name(port: str) -> str:
    return {"tls": "TLS (full config)", "bootstrap": "plain HTTP (bootstrap file)"}.get(port, port)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, colon=colon_form, port_name=port_name,
                       redirect=redirect_state.describe)
    env.globals.update(contact_outcome=resync.describe, settled=resync.settled)
    return env


class Pages:
    def __init__(self) -> None:
        self._env = _environment()

    def render(self, name: str, **context: Any) -> str:
        return self._env.get_template(name).render(**context)

    @staticmethod
    def static(name: str) -> tuple[bytes, str] | None:
        if name not in STATIC:
            return None
        return (HERE / "static" / name).read_bytes(), STATIC[name]
