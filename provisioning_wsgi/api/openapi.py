"""The OpenAPI 3.1 document of /api/v1/, served at /api/v1/openapi.json.

Schemas are JSON Schema 2020-12 (OpenAPI 3.1's), so a client validates answers with any JSON
Schema library; the tests check every answer they get against the schema declared here.
"""

from __future__ import annotations

from typing import Any

from autoprov.resync import FINAL_REQUEST_STATES

S = dict[str, Any]
# The longest GET /resync/{id}?wait= (each wait holds one of the admin port's few threads).
MAX_WAIT_S = 20.0
STR: S = {"type": "string"}
INT: S = {"type": "integer"}
BOOL: S = {"type": "boolean"}
TIME: S = {"type": "string", "format": "date-time"}


def _null(schema: S) -> S:
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> S:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: dict[str, S], optional: dict[str, S] | None = None,
         closed: bool = False) -> S:
    out: S = {"type": "object", "required": sorted(required),
              "properties": {**required, **(optional or {})}}
    if closed:
        out["additionalProperties"] = False
    return out


def _page(item: str) -> S:
    return _obj({"items": {"type": "array", "items": _ref(item)},
                 "next_cursor": _null(STR)})


SERIAL: S = {"type": "string", "pattern": "^[A-Za-z0-9]{1,64}$",
             "description": "the serial number on the phone's label (Grandstream GDMS needs it)"}
MAC: S = {"type": "string", "pattern": "^[0-9a-f]{12}$",
          "description": "12 lower-case hex digits (requests take any usual spelling)"}

SCHEMAS: dict[str, S] = {
    "ApiError": _obj({"type": STR, "title": STR, "status": INT, "detail": STR}, {
        "errors": {"type": "array", "items": _ref("FieldError")}}),
    "FieldError": _obj({"field": STR, "detail": STR}, {
        "row": {**INT, "description": "CSV import: the file's line (the header is line 1)"}}),
    # Closed: a password is never returned.
    "Subscriber": _obj({"username": STR, "domain": STR, "aor": STR, "lines": {
        "type": "array", "items": _obj({"mac": MAC, "line": INT}, closed=True)}}, closed=True),
    "SubscriberPage": _page("Subscriber"),
    "SubscriberCreate": _obj({"username": STR, "domain": STR, "password": STR}, closed=True),
    "PasswordChange": _obj({"password": STR}, closed=True),
    "LineInput": _obj({"line": {"type": "integer", "minimum": 1, "maximum": 64},
                       "subscriber": {**STR, "description": "USER@DOMAIN, an existing one"}},
                      {"display_name": STR}, closed=True),
    "DeviceCreate": _obj({"mac": STR, "vendor": STR, "model": STR},
                         {"lines": {"type": "array", "items": _ref("LineInput")},
                          "serial_number": SERIAL}, closed=True),
    "DevicePatch": _obj({}, {"model": STR, "serial_number": SERIAL, "lines": {
        "type": "array", "items": _ref("LineInput"),
        "description": "all the device's lines: those not given are removed"}}, closed=True),
    "DeviceSummary": _obj({"mac": MAC, "vendor": STR, "model": STR, "registered": BOOL,
                           "lines": {"type": "array", "items": _obj({
                               "line": INT, "aor": STR, "display_name": STR,
                               "registered": BOOL})}}),
    "DevicePage": _page("DeviceSummary"),
    "Device": _obj({
        "mac": MAC, "vendor": STR, "model": STR, "serial_number": _null(STR),
        "created_at": TIME, "updated_at": TIME,
        "lines": {"type": "array", "items": _obj({
            "line": INT, "aor": STR, "display_name": STR, "registered": BOOL,
            "contacts": INT})},
        "resync": _null(_ref("ResyncStatus")),
        "last_config_fetch": _null(_obj({"port": STR, "file": STR, "config_version": STR,
                                         "client_addr": _null(STR),
                                         "user_agent": _null(STR), "fetched_at": TIME})),
        "redirect": _null(_ref("Redirect"))}),
    "ResyncStatus": _obj({
        "request_id": INT, "mac": MAC, "reason": STR,
        "state": {"enum": sorted({"pending", "sending", *FINAL_REQUEST_STATES})},
        "checked": BOOL, "attempts": INT, "created_at": TIME, "updated_at": TIME,
        "contacts": {"type": "array", "items": _obj({
            "line": INT, "aor": STR, "contact": STR, "outcome": STR, "code": _null(INT),
            "challenged": BOOL, "credential": STR, "sent_at": _null(TIME),
            "answered_at": _null(TIME)})}}),
    "ResyncResult": {"allOf": [_ref("ResyncStatus"), _obj({
        "settled": {**BOOL, "description": "nothing more happens without a REGISTER"},
        "succeeded": {**BOOL, "description": "every contact accepted, or the phone fetched "
                      "its config since the change"}})]},
    "ResyncAccepted": _obj({"request_id": INT, "mac": MAC, "status_url": STR}),
    "Fetches": _obj({"mac": MAC, "fetches": {"type": "array", "items": _obj({
        "id": INT, "port": {"enum": ["tls", "bootstrap"]}, "file": STR,
        "config_version": STR, "client_addr": _null(STR), "user_agent": _null(STR),
        "fetched_at": TIME})}}),
    "Redirect": _obj({"service": STR, "status": STR, "outcome": _null(STR),
                      "reason": _null(STR), "attempts": _null(INT),
                      "next_attempt_at": _null(TIME), "updated_at": _null(TIME)}),
    "RedirectState": _obj({"mac": MAC, "redirect": _null(_ref("Redirect"))}),
    "RetryAccepted": _obj({"mac": MAC, "job_id": INT}),
    "Vendors": _obj({"items": {"type": "array", "items": _obj({
        "name": STR, "redirect_service": _null(STR),
        "models": {"type": "array", "items": _obj({"model": STR, "devices": INT})}})}}),
    "ImportReport": _obj({
        "dry_run": BOOL, "rows": INT, "valid": BOOL, "subscribers_created": INT,
        "devices_created": INT, "lines_created": INT,
        "errors": {"type": "array", "items": _ref("FieldError")}}),
}


def _json(description: str, schema: str, media: str = "application/json") -> S:
    return {"description": description, "content": {media: {"schema": _ref(schema)}}}


def _problem(description: str) -> S:
    return _json(description, "ApiError", "application/problem+json")


_COMMON = {"401": _problem("no, unknown or revoked token"),
           "503": _problem("the database does not answer")}
_WRITE = {**_COMMON, "403": _problem("a read-only token")}
_MISSING = {"404": _problem("no such device, subscriber or request")}
_INVALID = {"400": _problem("malformed body or query"),
            "413": _problem("body too large"), "415": _problem("wrong Content-Type"),
            "422": _problem("invalid fields, each named in errors")}


def _op(summary: str, responses: dict[str, S], body: str | None = None,
        params: list[S] | None = None, media: str = "application/json") -> S:
    op: S = {"summary": summary, "responses": responses}
    if body:
        op["requestBody"] = {"required": True, "content": {media: {"schema": _ref(body)}}}
    if params:
        op["parameters"] = params
    return op


def _query(name: str, schema: S, description: str) -> S:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _path(name: str, description: str) -> S:
    return {"name": name, "in": "path", "required": True, "schema": STR,
            "description": description}


_MAC_PARAM = [_path("mac", "any spelling: 00:15:65:aa:bb:cc, 0015.65aa.bbcc, ...")]
_AOR_PARAM = [_path("aor", "USER@DOMAIN")]
_PAGING = [_query("cursor", STR, "next_cursor of the previous page"),
           _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
                  "items per page (default 100)")]
_NO_CONTENT = {"description": "done"}

PATHS: dict[str, S] = {
    "/subscribers": {
        "get": _op("list subscribers", {"200": _json("a page", "SubscriberPage"), **_COMMON},
                   params=[_query("domain", STR, "only this domain"), *_PAGING]),
        "post": _op("create a subscriber (SIP account)", {
            "201": _json("created", "Subscriber"), "409": _problem("exists"),
            **_INVALID, **_WRITE}, "SubscriberCreate")},
    "/subscribers/{aor}": {
        "parameters": _AOR_PARAM,
        "get": _op("one subscriber and the device lines using it", {
            "200": _json("the subscriber", "Subscriber"), **_MISSING, **_COMMON}),
        "patch": _op("change the password (its devices resync)", {
            "200": _json("changed", "Subscriber"), **_MISSING, **_INVALID, **_WRITE},
            "PasswordChange"),
        "delete": _op("delete a subscriber", {
            "204": _NO_CONTENT, "409": _problem("a device line uses it"), **_MISSING,
            **_WRITE})},
    "/devices": {
        "get": _op("list devices", {"200": _json("a page", "DevicePage"),
                                    "400": _problem("bad query"), **_COMMON},
                   params=[_query("vendor", STR, "only this vendor"),
                           _query("model", STR, "only this model"),
                           _query("registered", BOOL, "only devices with (true) or without "
                                  "(false) a registered line"), *_PAGING]),
        "post": _op("create a device with its lines", {
            "201": _json("created", "Device"), "409": _problem("the MAC exists"),
            **_INVALID, **_WRITE}, "DeviceCreate")},
    "/devices/import": {
        "post": _op("create devices, lines and missing subscribers from CSV: "
                    "mac,vendor,model,line,username,domain,password,display_name"
                    "[,serial_number]; "
                    "all rows or none", {
                        "200": _json("dry run: what the import would do, per-row faults",
                                     "ImportReport"),
                        "201": _json("imported", "ImportReport"), **_INVALID, **_WRITE},
                    params=[_query("dry_run", BOOL, "check only, write nothing")],
                    body=None) | {"requestBody": {"required": True, "content": {
                        "text/csv": {"schema": STR}}}}},
    "/devices/{mac}": {
        "parameters": _MAC_PARAM,
        "get": _op("a device in full (`autoprov device show --json`)", {
            "200": _json("the device", "Device"), **_MISSING, **_COMMON}),
        "patch": _op("change the model or the lines (the device resyncs)", {
            "200": _json("changed", "Device"), **_MISSING, **_INVALID, **_WRITE},
            "DevicePatch"),
        "delete": _op("delete a device and its lines", {
            "204": _NO_CONTENT, **_MISSING, **_WRITE})},
    "/devices/{mac}/resync": {
        "parameters": _MAC_PARAM,
        "post": _op("ask the phone to fetch its config (SIP NOTIFY)", {
            "202": _json("requested; GET status_url for the outcome", "ResyncAccepted"),
            **_MISSING, **_WRITE})},
    "/resync/{id}": {
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": INT}],
        "get": _op("a resync request and each contact's outcome", {
            "200": _json("its state", "ResyncResult"), "400": _problem("bad wait"),
            **_MISSING, **_COMMON},
            params=[_query("wait", {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
                           "wait up to this many seconds for it to settle (when too many "
                           "clients wait already: the state at once)")])},
    "/devices/{mac}/fetches": {
        "parameters": _MAC_PARAM,
        "get": _op("the device's latest config fetches, newest first", {
            "200": _json("fetches", "Fetches"), **_MISSING, **_COMMON},
            params=[_query("limit", INT, "how many (default 20)")])},
    "/devices/{mac}/redirect": {
        "parameters": _MAC_PARAM,
        "get": _op("the device's registration with its vendor's redirect service", {
            "200": _json("its state (null: the vendor has none)", "RedirectState"),
            **_MISSING, **_COMMON})},
    "/devices/{mac}/redirect/retry": {
        "parameters": _MAC_PARAM,
        "post": _op("queue a failed redirect registration again", {
            "202": _json("queued", "RetryAccepted"),
            "409": _problem("nothing to retry"), **_MISSING, **_WRITE})},
    "/vendors": {
        "get": _op("the vendors and the models their devices have", {
            "200": _json("vendors", "Vendors"), **_COMMON})},
}

DOCUMENT: S = {
    "openapi": "3.1.0",
    "info": {"title": "autoprov", "version": "1",
             "description": "Devices, lines and SIP accounts of the provisioning service. "
                            "Authorization: Bearer TOKEN (`autoprov token create NAME`)."},
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "paths": PATHS,
    "components": {"schemas": SCHEMAS,
                   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
}
