"""The server's API key: checked at start-up, compared in constant time, and carried by the web page's cookie.

API clients send ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. A browser opens ``/?key=KEY`` once
(or types the key into the form ``/`` shows without one): the server answers with a cookie holding
:func:`page_token` — an HMAC of the key, never the key itself — marked ``HttpOnly`` (page scripts cannot
read it) and ``SameSite=Strict`` (other sites' pages cannot send it), then redirects to ``/`` so the key
leaves the address bar. Every route accepts the header or the cookie. Writes also need a JSON body, which
a cross-site form cannot send without a CORS preflight, which this server never grants.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from tunesmith.errors import UserError

COOKIE = "tunesmith_key"


def check_api_key(key: str | None, source: str = "--api-key") -> str | None:
    """The key, or None when unset; UserError when no HTTP request could ever send it.

    Header values are ASCII, and surrounding spaces are stripped from them: a key must be printable
    ASCII without spaces (letters, digits and punctuation, e.g. from ``openssl rand -hex 32``).
    """
    if key is None or key == "":
        return None
    bad = sorted({c for c in key if not ("!" <= c <= "~")})
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        raise UserError(
            f"{source}: the API key contains {shown}; a key must be printable ASCII without spaces "
            "(HTTP headers cannot carry anything else), e.g. the output of `openssl rand -hex 32`"
        )
    return key


def page_token(key: str) -> str:
    """The web page's cookie value for ``key``: HMAC-SHA256 of a fixed label (reveals nothing of the key)."""
    return hmac.new(key.encode("ascii"), b"tunesmith web page", hashlib.sha256).hexdigest()


def given_key(headers: Mapping[str, str]) -> str:
    """The key a request sent: ``X-API-Key`` or ``Authorization: Bearer``; "" when none."""
    given = headers.get("x-api-key") or ""
    auth = headers.get("authorization") or ""
    if not given and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given


def authorized(key: str | None, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
    """Whether a request may pass: no key configured, the key in a header, or the page cookie."""
    if not key:
        return True
    sent = given_key(headers).encode("utf-8", "replace")
    if hmac.compare_digest(sent, key.encode("ascii")):
        return True
    cookie = (cookies.get(COOKIE) or "").encode("utf-8", "replace")
    return hmac.compare_digest(cookie, page_token(key).encode("ascii"))
