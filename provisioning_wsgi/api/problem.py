"""Errors as RFC 9457 problem details (application/problem+json), naming the fields at fault."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from provisioning_wsgi.admin import web

CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://autoprov.invalid/problems/"


@dataclass
class FieldError:
    field: str
    detail: str
    # The CSV import's data row (the file's line, the header being line 1).
    row: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "detail": self.detail}
        if self.row is not None:
            out["row"] = self.row
        return out


@dataclass
class ApiError(Exception):
    """Raised anywhere in a request; the app answers it as problem+json (a Problem)."""
    status: int
    kind: str
    detail: str
    errors: list[FieldError] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)

    def response(self) -> web.Response:
        body: dict[str, Any] = {"type": TYPE_BASE + self.kind,
                                "title": HTTPStatus(self.status).phrase,
                                "status": self.status, "detail": self.detail}
        if self.errors:
            body["errors"] = [e.as_dict() for e in self.errors]
        return web.Response(self.status, json.dumps(body).encode(), CONTENT_TYPE,
                            list(self.headers), reason=self.kind)


def invalid(errors: list[FieldError], detail: str = "the request has invalid fields") -> ApiError:
    return ApiError(422, "invalid-fields", detail, errors)


def not_found(detail: str) -> ApiError:
    return ApiError(404, "not-found", detail)


def conflict(detail: str, errors: list[FieldError] | None = None) -> ApiError:
    return ApiError(409, "conflict", detail, errors or [])
