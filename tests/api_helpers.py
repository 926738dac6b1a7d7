"""The REST API under test: a service with it, tokens made with the CLI, and a client that
checks every answer against the schema the OpenAPI document declares for it."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import requests
from jsonschema import Draft202012Validator

from autoprov.config import Settings
from tests.admin_helpers import admin_url, browser_session
from tests.conftest import RunningService, autoprov_cli


def new_token(settings: Settings, name: str, *options: str) -> str:
    done = autoprov_cli(settings, "token", "create", name, *options, check=True)
    return done.stdout.strip().splitlines()[-1]


@dataclass
class Api:
    settings: Settings
    running: RunningService
    token: str
    token_name: str
    document: dict[str, Any] = field(default_factory=dict)
    checked: set[tuple[str, str, str]] = field(default_factory=set)

    def call(self, method: str, path: str, token: str | None = "", **kwargs: Any
             ) -> requests.Response:
        """One request to /api/v1{path} with this token (None: none); the answer is checked
        against the document when the document describes the path."""
        session = browser_session(self.settings, auth=None)
        headers = dict(kwargs.pop("headers", {}))
        bearer = self.token if token == "" else token
        if bearer is not None:
            headers.setdefault("Authorization", f"Bearer {bearer}")
        reply = session.request(method, admin_url(self.settings, "/api/v1" + path),
                                headers=headers, timeout=60, **kwargs)
        assert "<html" not in reply.text.lower()
        self.check(method, path, reply)
        return reply

    def template(self, path: str) -> str | None:
        path = path.split("?")[0]
        literal = [t for t in self.document["paths"] if t == path]
        shaped = [t for t in self.document["paths"]
                  if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", t), path)]
        return (literal or shaped or [None])[0]

    def check(self, method: str, path: str, reply: requests.Response) -> None:
        template = self.template(path)
        if template is None or not self.document:
            return
        operation = self.document["paths"][template].get(method.lower())
        if operation is None:
            assert reply.status_code == 405, (method, path)
            return
        status = str(reply.status_code)
        assert status in operation["responses"], (method, template, status, reply.text)
        declared = operation["responses"][status].get("content")
        if declared is None:
            assert reply.content == b""
            return
        media = reply.headers["Content-Type"].split(";")[0]
        assert media in declared, (method, template, status, media)
        schema = {**declared[media]["schema"], "components": self.document["components"]}
        Draft202012Validator(schema).validate(reply.json())
        self.checked.add((method, template, status))


def start_api(settings: Settings, running: RunningService) -> Api:
    name = f"crm-{secrets.token_hex(3)}"
    api = Api(settings, running, new_token(settings, name), name)
    reply = browser_session(settings, auth=None).get(
        admin_url(settings, "/api/v1/openapi.json"))
    assert reply.status_code == 200
    api.document = reply.json()
    return api
