"""Secrets in URIs: ``user:password@`` and credential query values never reach logs or params.

A tracking URI such as ``postgresql://mlflow:S3cret@db/mlflow`` or
``https://user:token@host`` carries a password; everything the pipeline prints, logs
to MLflow or stores as a param goes through :func:`redact_uri` (one URI) or
:func:`redact_text` (a message that may quote one).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

MASK = "***"
# scheme://user:password@host: the password goes (the user name stays: it helps debugging);
# scheme://token@host: a lone user part may be a token, so it goes too.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s]*)@")
# Query parameters whose value is a credential (?password=..., &token=..., &X-Amz-Signature=...).
_SECRET_KEYS = r"password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|signature|sig|auth\w*"
_QUERY = re.compile(rf"(?P<head>[?&](?:{_SECRET_KEYS})=)(?P<secret>[^&#\s]*)", re.IGNORECASE)


def redact_uri(text: str) -> str:
    """``text`` with every URI password and credential query value replaced by ``***``."""
    text = _USERINFO.sub(_mask_userinfo, text)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}", text)


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    return f"{match['head']}{user}:{MASK}@" if colon else f"{match['head']}{MASK}@"


def redact_text(text: str, *uris: str | None) -> str:
    """``text`` with URI secrets masked, also bare copies of the passwords in ``uris``."""
    for uri in uris:
        for secret in uri_secrets(uri or ""):
            text = text.replace(secret, MASK)
    return redact_uri(text)


def uri_secrets(uri: str) -> list[str]:
    """The passwords and credential query values a URI carries (empty when it has none)."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:  # a malformed port or netloc: fall back to the pattern
        match = _USERINFO.search(uri)
        password = match["userinfo"].partition(":")[2] if match else None
        parts = None
    found = [password] if password else []
    if parts is not None:
        keys = re.compile(rf"^(?:{_SECRET_KEYS})$", re.IGNORECASE)
        found += [value for key, value in parse_qsl(parts.query) if keys.match(key) and value]
    return found
