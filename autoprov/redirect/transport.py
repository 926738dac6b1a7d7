"""XML-RPC over HTTPS with Basic auth, via requests: TLS verified, timeouts, failures mapped.

The standard library only marshals (dumps/loads): its own transport takes neither a CA bundle
nor a timeout per call.
"""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Callable
from typing import Any
from xml.parsers.expat import ExpatError

import requests

from autoprov.redirect.base import Outcome, Result


class CallFailedError(Exception):
    """The call did not produce an XML-RPC answer; ``result`` says why."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.message)
        self.result = result


class XmlRpcEndpoint:
    def __init__(self, url: str, user: str, password: str, *, ca_bundle: str = "",
                 timeout: float = 10.0) -> None:
        self.url = url
        self._password = password
        self._timeout = timeout
        self._session = requests.Session()
        # REQUESTS_CA_BUNDLE and proxy variables must not override what is configured.
        self._session.trust_env = False
        self._session.auth = (user, password)
        self._session.verify = ca_bundle or True
        self._session.headers["Content-Type"] = "text/xml"

    def call(self, method: str, *params: Any) -> Any:
        """The answer's single value; raises xmlrpc.client.Fault as the vendor sent it, or
        CallFailedError for anything else."""
        body = xmlrpc.client.dumps(params, methodname=method, encoding="utf-8")
        response = post(self._session, self.url, self._timeout, self._failed, data=body.encode())
        check_status(response, self._failed, "credentials refused")
        try:
            values, _ = xmlrpc.client.loads(response.content, use_builtin_types=True)
        except xmlrpc.client.Fault:
            raise
        except (ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError,
                IndexError) as exc:
            raise self._failed(Outcome.TEMPORARY, f"malformed XML-RPC answer: {exc}") from None
        if len(values) != 1:
            raise self._failed(Outcome.TEMPORARY,
                               f"malformed XML-RPC answer: {len(values)} values")
        return values[0]

    def scrub(self, text: str) -> str:
        """Text for logs and the database, with the password (should it appear) blanked."""
        return text.replace(self._password, "***") if self._password else text

    def _failed(self, outcome: Outcome, message: str) -> CallFailedError:
        return CallFailedError(Result(outcome, self.scrub(message)))


def post(session: requests.Session, url: str, timeout: float,
         failed: Callable[[Outcome, str], CallFailedError], **kwargs: Any) -> requests.Response:
    """POST without following redirects; a vendor out of reach (timeout, TLS, connection) is a
    temporary failure, raised as ``failed`` makes it (with its secrets scrubbed)."""
    try:
        return session.post(url, timeout=timeout, allow_redirects=False, **kwargs)
    except requests.Timeout:
        raise failed(Outcome.TEMPORARY, f"no answer within {timeout:g}s") from None
    except requests.exceptions.SSLError as exc:
        raise failed(Outcome.TEMPORARY, f"TLS: {exc}") from None
    except requests.RequestException as exc:
        raise failed(Outcome.TEMPORARY, f"cannot reach {url}: {exc}") from None


def check_status(response: requests.Response,
                 failed: Callable[[Outcome, str], CallFailedError], refused: str) -> None:
    """Anything but 200 raised as what it means: 401/403 the vendor refused us (``refused``
    says what), 5xx, 408 and 429 temporary, the rest (a redirect, a 404) a refusal."""
    status = response.status_code
    if status in (401, 403):
        raise failed(Outcome.AUTH_FAILED, f"HTTP {status}: {refused}")
    if status >= 500 or status in (408, 429):
        raise failed(Outcome.TEMPORARY, f"HTTP {status} {response.reason}")
    if status != 200:
        where = response.headers.get("Location", "")
        raise failed(Outcome.REJECTED, f"HTTP {status} {response.reason} {where}".strip())


def call_pair(endpoint: XmlRpcEndpoint, classify: Callable[[str], Outcome], method: str,
              *params: str) -> tuple[bool, str]:
    """A call whose answer is a ``[bool, "message"]`` array (Yealink RPS, Snom SRAPS): the pair,
    the message scrubbed; a fault or another shape raises CallFailedError."""
    try:
        answer: Any = endpoint.call(method, *params)
    except xmlrpc.client.Fault as fault:
        text = endpoint.scrub(f"{fault.faultString} (fault {fault.faultCode})")
        raise CallFailedError(Result(classify(fault.faultString), text)) from None
    if (isinstance(answer, list) and len(answer) >= 2 and isinstance(answer[0], bool)
            and isinstance(answer[1], str)):
        return answer[0], endpoint.scrub(answer[1])
    # Well-formed but not the documented shape: the API changed, retrying will not help.
    raise CallFailedError(Result(Outcome.REJECTED,
                                 f"{method}: unexpected answer {str(answer)[:200]!r}"))
