"""The adapters, by the service name that autoprov.vendor.redirect_service holds."""

from __future__ import annotations

from autoprov.config import Settings
from autoprov.redirect import grandstream, panasonic, snom, yealink
from autoprov.redirect.base import RedirectService, ServiceSpec

SPECS: dict[str, ServiceSpec] = {spec.name: spec for spec in (yealink.SPEC, panasonic.SPEC,
                                                               snom.SPEC, grandstream.SPEC)}


def build(settings: Settings) -> dict[str, RedirectService]:
    """An adapter for every service that is configured."""
    return {name: spec.build(settings) for name, spec in SPECS.items() if spec.enabled(settings)}


def unavailable_reason(name: str) -> str:
    spec = SPECS.get(name)
    if spec is None:
        return f"no adapter for redirect service {name!r} (see autoprov.vendor.redirect_service)"
    return (f"{spec.label} integration is disabled ({spec.endpoint_key} is empty); "
            "configure it, then `autoprov redirect retry MAC`")
