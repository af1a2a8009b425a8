"""Download a Kaggle dataset archive with the kaggle package's public API: caps, retries, no leaked secrets.

Credentials are the kaggle package's business: :func:`authenticate` calls
``KaggleApi.authenticate()``, which looks them up as the ``kaggle`` CLI does (an access
token, a legacy key in the environment or ``kaggle.json``, OAuth credentials from
``kaggle auth login``), so a new kaggle release brings its own lookup. ``import kaggle``
authenticates at import and prints its help when there are none (and creates its config
folder): the import and ``authenticate()`` run with stdout captured, and "none found"
becomes one error line that says how to provide them, before any output folder is touched.

The download link comes from the same call ``kaggle datasets download`` makes:
``KaggleApi.build_kaggle_client()`` and the SDK's ``datasets.dataset_api_client.
download_dataset``, which answers with a redirect to a signed storage URL and follows it.
The SDK sets no timeout, so that call runs against a deadline. The archive is then read
from the signed URL it was sent to (``response.url``) with ``requests``: a socket timeout,
a byte cap, streamed to disk. The URL is signed, so that request carries no credentials;
kaggle's own resumed downloads fetch the same URL again too.

Transient failures (connection errors, timeouts, cut transfers, HTTP 5xx and 429) are
retried with exponential backoff, starting over. A ``Retry-After`` header on a 429 or 503
(seconds or an HTTP date) sets the wait instead, up to :data:`MAX_RETRY_AFTER_S`; when
the server asks for longer, the download stops with a message to run again later.

``KAGGLE_API_ENVIRONMENT`` and the usual proxy variables are honoured as by the kaggle
CLI. Secrets never reach a log line or a message: errors are reported by type and
status, with URLs stripped of query strings and any secret value masked.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import io
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from fishseg.errors import FishsegError
from fishseg.fsutil import check_free_space, write_error
from fishseg.progress import progress_bar

log = logging.getLogger(__name__)

TOKEN_URL = "https://www.kaggle.com/settings/api"
MAX_RETRY_AFTER_S = 600.0
_CHUNK = 1 << 20
_MAX_DELAY_S = 120.0
_DATASET = re.compile(r"^(?P<owner>[\w.-]+)/(?P<slug>[\w.-]+)(?:/(?:versions/)?(?P<version>\d+))?$")
_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\")]*")
_ORIGINS = {
    "ACCESS_TOKEN": "an access token (KAGGLE_API_TOKEN or ~/.kaggle/access_token)",
    "LEGACY_API_KEY": "an API key (KAGGLE_USERNAME/KAGGLE_KEY or kaggle.json)",
    "OAUTH": "OAuth credentials (`kaggle auth login`)",
}
T = TypeVar("T")


@dataclass(frozen=True)
class KaggleAccess:
    """An authenticated ``KaggleApi``, where its credentials came from (safe to show) and
    every form in which a secret could be echoed back (never shown)."""

    api: Any = field(repr=False)
    origin: str
    secrets: tuple[str, ...] = field(default=(), repr=False)


def how_to() -> str:
    return (
        f"create an API token at {TOKEN_URL}, then either export KAGGLE_API_TOKEN=<token> "
        "(or save it to ~/.kaggle/access_token), or export KAGGLE_USERNAME=<user> and KAGGLE_KEY=<key> "
        '(or save {"username": "<user>", "key": "<key>"} to ~/.kaggle/kaggle.json, chmod 600), '
        "or run `kaggle auth login`; or download the archive yourself and set data.source to its path"
    )


def _quietly(fn: Callable[[], T]) -> tuple[T, str]:
    """Run ``fn`` with stdout captured (kaggle prints its help and notices there)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        return fn(), buffer.getvalue()


def authenticate() -> KaggleAccess:
    """Credentials found and accepted by ``KaggleApi.authenticate()``; :class:`FishsegError` if none."""

    def load() -> Any:
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi
        except ImportError:
            raise FishsegError(
                "data.source = kaggle needs the kaggle package: pip install kaggle==2.2.4"
            ) from None
        api = KaggleApi()
        try:
            api.authenticate()
        except SystemExit:  # kaggle's way of saying "no credentials", after printing its help
            return None
        return api

    try:
        api, printed = _quietly(load)
    except FishsegError:
        raise
    except Exception as exc:  # an unreadable kaggle.json, or no answer when a token is checked online
        raise FishsegError(
            f"the kaggle package could not read or check the credentials ({type(exc).__name__}): check "
            "~/.kaggle/kaggle.json (or KAGGLE_CONFIG_DIR) and the network connection, or download the archive "
            "yourself and set data.source to its path"
        ) from None
    if api is None:
        raise FishsegError(f"Kaggle credentials not found for data.source = kaggle: {how_to()}")
    if printed.strip():
        log.debug("kaggle printed %d lines while authenticating", len(printed.splitlines()))
    values = api.config_values
    username, key, token = values.get("username"), values.get("key"), values.get("token")
    secrets = [v for v in (key, token) if v]
    if username and key:
        secrets.append(base64.b64encode(f"{username}:{key}".encode()).decode())
    origin = _ORIGINS.get(str(values.get("auth_method")), "kaggle's configuration")
    return KaggleAccess(api=api, origin=origin, secrets=tuple(secrets))


def parse_dataset(dataset: str) -> tuple[str, str, int | None]:
    """``owner/slug`` or ``owner/slug/N`` (a version) -> (owner, slug, version)."""
    match = _DATASET.match(dataset.strip())
    if not match:
        raise FishsegError(
            f"data.kaggle_dataset = {dataset!r}: expected owner/name as in the dataset's URL, "
            "e.g. crowww/a-large-scale-fish-dataset (optionally /<version>)"
        )
    version = match["version"]
    return match["owner"], match["slug"], int(version) if version else None


def redact(text: str, secrets: tuple[str, ...] | list[str]) -> str:
    """``text`` with URL query strings (signed URLs) cut and every secret masked."""
    text = _QUERY.sub(r"\1?...", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def retry_after_s(headers: Any, now: datetime | None = None) -> float | None:
    """The wait a ``Retry-After`` header asks for: seconds, or an HTTP date; ``None`` if absent or unreadable."""
    value = (headers or {}).get("Retry-After")
    if value is None:
        return None
    value = str(value).strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _Transient(Exception):
    """A failure worth another attempt (the message is already safe to show)."""

    def __init__(self, reason: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.wait_s = wait_s  # what the server asked for (Retry-After), if anything


def _within(seconds: float, fn: Callable[[], T]) -> T:
    """``fn()``, or :class:`_Transient` when it has not returned after ``seconds``.

    For calls that set no timeout of their own: the call is left to finish in a daemon
    thread, which the process does not wait for.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True, name="kaggle-request")
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _Transient(f"no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _permanent_http(status: int, dataset: str, origin: str) -> FishsegError:
    if status == 401:
        return FishsegError(
            f"Kaggle rejected the credentials, {origin} (HTTP 401): create a new API token at {TOKEN_URL} "
            "and update them"
        )
    if status == 403:
        return FishsegError(
            f"Kaggle refused access to {dataset} (HTTP 403): sign in at https://www.kaggle.com/datasets/{dataset}, "
            "accept the dataset's terms if asked, and check that the token may download data"
        )
    if status == 404:
        return FishsegError(
            f"Kaggle dataset not found: {dataset} (HTTP 404): check data.kaggle_dataset (owner/name, as in the "
            "dataset's URL)"
        )
    return FishsegError(
        f"Kaggle download of {dataset} failed with HTTP {status}: check data.kaggle_dataset and run again"
    )


def _check_status(response: Any, dataset: str, origin: str) -> None:
    """Raise for an HTTP error: :class:`_Transient` (5xx, 429, with any Retry-After) or permanent."""
    status = getattr(response, "status_code", None) or 0
    if status < 400:
        return
    if status >= 500 or status == 429:
        raise _Transient(f"HTTP {status}", retry_after_s(response.headers))
    raise _permanent_http(status, dataset, origin)


def _open_archive(access: KaggleAccess, dataset: str, client: Any, timeout_s: float) -> Any:
    """The archive's response, streaming: the SDK's redirect to storage, then that URL read with a timeout."""
    import requests
    from kagglesdk.datasets.types.dataset_api_service import ApiDownloadDatasetRequest

    owner, slug, version = parse_dataset(dataset)
    request = ApiDownloadDatasetRequest()
    request.owner_slug, request.dataset_slug, request.dataset_version_number = owner, slug, version
    try:
        answer = _within(timeout_s, lambda: client.datasets.dataset_api_client.download_dataset(request))
    except requests.HTTPError as exc:
        _check_status(exc.response, dataset, access.origin)
        raise
    if not answer.history:  # served by the API itself: read as it is
        return answer
    url = answer.url
    answer.close()
    response = requests.get(url, stream=True, timeout=timeout_s)
    _check_status(response, dataset, access.origin)
    return response


def _stream_to(response: Any, dest: Path, dataset: str, *, max_bytes: int, progress: bool) -> int:
    """Write the body to ``dest`` within the byte cap; return the byte count."""
    declared_text = response.headers.get("Content-Length", "")
    declared = int(declared_text) if declared_text.isdigit() else None
    too_big = f"more than data.max_archive_bytes = {max_bytes} bytes: raise data.max_archive_bytes"
    if declared is not None and declared > max_bytes:
        raise FishsegError(f"Kaggle dataset {dataset} is {declared} bytes, {too_big}")
    if declared is not None:
        check_free_space(dest.parent, declared, f"the Kaggle download of {dataset}")
    try:
        out = open(dest, "wb")  # noqa: SIM115 - write errors are told apart from network errors below
    except OSError as exc:
        raise write_error(dest, exc) from None
    received = 0
    bar = progress_bar(
        total=declared, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.stem, enabled=progress
    )
    with out, bar:
        for chunk in response.iter_content(_CHUNK):  # network errors propagate: the caller retries
            received += len(chunk)
            if received > max_bytes:
                raise FishsegError(f"Kaggle dataset {dataset} sent {too_big}")
            try:
                out.write(chunk)
            except OSError as exc:
                raise write_error(dest, exc) from None
            bar.update(len(chunk))
    if declared is not None and received != declared:
        raise _Transient(f"transfer cut short: {received} of {declared} bytes")
    return received


def _attempt(
    access: KaggleAccess, dataset: str, dest: Path, *, max_bytes: int, timeout_s: float, progress: bool
) -> int:
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(access.api.build_kaggle_client())
        response = stack.enter_context(_open_archive(access, dataset, client, timeout_s))
        return _stream_to(response, dest, dataset, max_bytes=max_bytes, progress=progress)


def _wait_s(failure: _Transient, attempt: int, backoff_s: float, dataset: str) -> float:
    """How long to wait before the next attempt: the server's Retry-After, else exponential backoff."""
    if failure.wait_s is not None:
        if failure.wait_s > MAX_RETRY_AFTER_S:
            raise FishsegError(
                f"Kaggle asks to wait {failure.wait_s:.0f} s before downloading {dataset} again ({failure}, "
                "Retry-After): run again later"
            )
        return failure.wait_s
    return min(backoff_s * 2 ** (attempt - 1), _MAX_DELAY_S) * (1.0 + 0.1 * random.random())


def download(
    access: KaggleAccess,
    dataset: str,
    dest: Path,
    *,
    max_bytes: int,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    progress: bool = True,
) -> Path:
    """Download ``dataset``'s archive to ``dest`` with retries; raise :class:`FishsegError` at the end."""
    import requests
    import urllib3

    parse_dataset(dataset)
    transient = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
    transient += (requests.exceptions.ContentDecodingError, urllib3.exceptions.HTTPError, ConnectionError)
    attempts = retries + 1
    log.info("downloading Kaggle dataset %s (credentials: %s)", dataset, access.origin)
    for attempt in range(1, attempts + 1):
        try:
            size = _attempt(
                access, dataset, dest, max_bytes=max_bytes, timeout_s=timeout_s, progress=progress
            )
            log.info("downloaded %s: %d bytes", dataset, size)
            return dest
        except FishsegError:
            raise
        except _Transient as exc:
            failure = exc
        except transient as exc:
            failure = _Transient(redact(f"{type(exc).__name__}: {exc}", access.secrets))
        except Exception as exc:
            # Anything else is a bug or an unusual environment: report it safely, without retrying.
            reason = redact(f"{type(exc).__name__}: {exc}", access.secrets)
            raise FishsegError(f"Kaggle download of {dataset} failed: {reason}") from None
        if attempt == attempts:
            raise FishsegError(
                f"Kaggle download of {dataset} failed after {attempts} attempts (last: {failure}): check the network "
                "connection (and proxy settings) and run again, raise data.download_retries, or download the "
                "archive yourself and set data.source to its path"
            )
        delay = _wait_s(failure, attempt, backoff_s, dataset)
        source = "as the server asked (Retry-After)" if failure.wait_s is not None else "backoff"
        log.warning(
            "Kaggle download attempt %d/%d failed (%s); retrying in %.1f s, %s",
            attempt,
            attempts,
            failure,
            delay,
            source,
        )
        time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
