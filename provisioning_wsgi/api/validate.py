"""Request bodies checked field by field, every fault named (`lines[0].line`), before any SQL.

The database keeps the last word (its constraints and triggers); these checks are the same
rules said earlier, so a client learns every bad field at once instead of the first one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from autoprov.devices import SERIAL
from autoprov.mac import InvalidMacError, normalize
from provisioning_wsgi.api.problem import FieldError, invalid

# Kamailio's subscriber columns are varchar(64); the API names an account USER@DOMAIN, so its
# parts hold no @ or blank. Nothing else is refused here that SQL takes.
_NAME_PART = re.compile(r"^[^@\s]{1,64}$")
_AOR = re.compile(r"^([^@\s]+)@([^@\s]+)$")
MAX_LINES = 64


@dataclass(frozen=True)
class Line:
    line: int
    username: str
    domain: str
    display_name: str


@dataclass(frozen=True)
class NewDevice:
    mac: str
    vendor: str
    model: str
    lines: list[Line]
    serial_number: str | None = None


@dataclass(frozen=True)
class DeviceChange:
    model: str | None
    lines: list[Line] | None
    serial_number: str | None = None  # None: unchanged


@dataclass(frozen=True)
class NewSubscriber:
    username: str
    domain: str
    password: str


def _object(body: Any, allowed: set[str]) -> tuple[dict[str, Any], list[FieldError]]:
    if not isinstance(body, dict):
        raise invalid([FieldError("", "the body must be a JSON object")])
    return body, [FieldError(k, "unknown field") for k in sorted(set(body) - allowed)]


def _text(body: dict[str, Any], key: str, errors: list[FieldError], where: str = "",
          required: bool = True, max_len: int | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            errors.append(FieldError(where + key, "required"))
        return None
    if not isinstance(value, str):
        errors.append(FieldError(where + key, "must be a string"))
        return None
    if max_len is not None and len(value) > max_len:
        errors.append(FieldError(where + key, f"at most {max_len} characters"))
        return None
    return value


def mac_field(value: Any, name: str, errors: list[FieldError]) -> str | None:
    if not isinstance(value, str):
        errors.append(FieldError(name, "required: a MAC address"))
        return None
    try:
        return normalize(value)
    except InvalidMacError as exc:
        errors.append(FieldError(name, str(exc)))
        return None


def split_aor(text: str) -> tuple[str, str] | None:
    match = _AOR.match(text)
    if not match or not (_NAME_PART.match(match[1]) and _NAME_PART.match(match[2])):
        return None
    return match[1], match[2]


def _model(body: dict[str, Any], errors: list[FieldError], required: bool) -> str | None:
    model = _text(body, "model", errors, required=required)
    if model is not None and not model.strip():
        errors.append(FieldError("model", "must not be blank"))
    return model


def _lines(value: Any, errors: list[FieldError]) -> list[Line]:
    if not isinstance(value, list):
        errors.append(FieldError("lines", "must be a list"))
        return []
    if len(value) > MAX_LINES:
        errors.append(FieldError("lines", f"at most {MAX_LINES} lines"))
        return []
    lines, seen = [], set()
    for i, item in enumerate(value):
        where = f"lines[{i}]."
        if not isinstance(item, dict):
            errors.append(FieldError(f"lines[{i}]", "must be an object"))
            continue
        _, unknown = _object(item, {"line", "subscriber", "display_name"})
        errors += [FieldError(where + e.field, e.detail) for e in unknown]
        number = item.get("line")
        if not isinstance(number, int) or isinstance(number, bool) \
                or not 1 <= number <= MAX_LINES:
            errors.append(FieldError(where + "line", f"required: a number from 1 to {MAX_LINES}"))
            number = None
        elif number in seen:
            errors.append(FieldError(where + "line", f"line {number} is given twice"))
        seen.add(number)
        aor = _text(item, "subscriber", errors, where)
        parts = split_aor(aor) if aor is not None else None
        if aor is not None and parts is None:
            errors.append(FieldError(where + "subscriber", "must be USER@DOMAIN"))
        name = _text(item, "display_name", errors, where, required=False) or ""
        if number is not None and parts is not None:
            lines.append(Line(number, parts[0], parts[1], name))
    return lines


def _serial(body: dict[str, Any], errors: list[FieldError]) -> str | None:
    serial = _text(body, "serial_number", errors, required=False)
    if serial is not None and not SERIAL.fullmatch(serial):
        errors.append(FieldError("serial_number", "1 to 64 letters and digits"))
    return serial


def new_device(body: Any) -> NewDevice:
    fields, errors = _object(body, {"mac", "vendor", "model", "lines", "serial_number"})
    mac = mac_field(fields.get("mac"), "mac", errors)
    vendor = _text(fields, "vendor", errors)
    model = _model(fields, errors, required=True)
    lines = _lines(fields.get("lines", []), errors)
    serial = _serial(fields, errors)
    if errors:
        raise invalid(errors)
    assert mac is not None and vendor is not None and model is not None
    return NewDevice(mac, vendor, model, lines, serial)


def device_change(body: Any) -> DeviceChange:
    fields, errors = _object(body, {"model", "lines", "serial_number"})
    model = _model(fields, errors, required=False)
    lines = _lines(fields["lines"], errors) if "lines" in fields else None
    serial = _serial(fields, errors)
    if errors:
        raise invalid(errors)
    return DeviceChange(model, lines, serial)


def password(body: dict[str, Any], errors: list[FieldError]) -> str | None:
    value = _text(body, "password", errors, max_len=64)
    if value is not None and not value:
        errors.append(FieldError("password", "must not be empty"))
    return value


def new_subscriber(body: Any) -> NewSubscriber:
    fields, errors = _object(body, {"username", "domain", "password"})
    parts = []
    for key in ("username", "domain"):
        value = _text(fields, key, errors, max_len=64)
        if value is not None and not _NAME_PART.match(value):
            errors.append(FieldError(key, "1 to 64 characters, no @ or blank"))
        parts.append(value)
    secret = password(fields, errors)
    if errors:
        raise invalid(errors)
    assert parts[0] is not None and parts[1] is not None and secret is not None
    return NewSubscriber(parts[0], parts[1], secret)


def new_password(body: Any) -> str:
    fields, errors = _object(body, {"password"})
    secret = password(fields, errors)
    if errors:
        raise invalid(errors)
    assert secret is not None
    return secret
