"""Download a Kaggle dataset archive: credentials, retries, a byte cap, no leaked secrets.

Credentials are looked up the way kaggle 2.2.4 does, without importing it: an access
token (``KAGGLE_API_TOKEN``, the token itself or a file holding it, or
``~/.kaggle/access_token``), then a legacy key (``KAGGLE_USERNAME`` + ``KAGGLE_KEY``, or
``kaggle.json`` in ``KAGGLE_CONFIG_DIR``, ``~/.kaggle`` or ``~/.config/kaggle``; the
environment wins per field), then OAuth credentials from ``kaggle auth login``
(``~/.kaggle/credentials.json``). With none, :func:`find_credentials` raises before any
import or network call.

The transfer uses ``kagglesdk``, the client layer of the ``kaggle`` package that
``KaggleApi.dataset_download_files`` calls, and not ``kaggle.api`` itself, because
``import kaggle`` authenticates at import (it prints a banner, creates config folders
and, with a token, calls the network), and ``dataset_download_files`` prints to stdout,
retries on its own with sleeps of up to 60 s and sets no cap on the bytes it accepts.
Here each attempt is the same request (``DatasetApiService/DownloadDataset``, then the
redirect to storage, which ``requests`` follows without the credentials), streamed to
disk with a cap and a socket timeout; transient failures (connection errors, timeouts,
cut transfers, HTTP 5xx and 429) are retried with exponential backoff, starting over.

``KAGGLE_API_ENVIRONMENT`` and the usual proxy variables are honoured as by the kaggle
CLI. Secrets never reach a log line or a message: errors are reported by type and
status, with URLs stripped of query strings and any secret value masked.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fishseg.errors import FishsegError
from fishseg.fsutil import check_free_space

log = logging.getLogger(__name__)

TOKEN_URL = "https://www.kaggle.com/settings/api"
_CHUNK = 1 << 20
_MAX_DELAY_S = 120.0
_DATASET = re.compile(r"^(?P<owner>[\w.-]+)/(?P<slug>[\w.-]+)(?:/(?:versions/)?(?P<version>\d+))?$")
_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\")]*")


@dataclass(frozen=True)
class KaggleCredentials:
    """Where the credentials came from (safe to show) and the secrets (never shown)."""

    origin: str
    username: str | None = None
    key: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    oauth_file: Path | None = None

    def secrets(self) -> list[str]:
        """Every form in which a secret could be echoed back: raw, and as a Basic auth value."""
        values = [v for v in (self.key, self.token) if v]
        if self.username and self.key:
            values.append(base64.b64encode(f"{self.username}:{self.key}".encode()).decode())
        return values


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """kaggle's config folder: ``KAGGLE_CONFIG_DIR``, else ``~/.kaggle``, else ``~/.config/kaggle``."""
    env = os.environ if env is None else env
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"]).expanduser()
    home_dir = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not home_dir.exists():
        xdg = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(xdg) / "kaggle"
    return home_dir


def _how_to() -> str:
    return (
        f"create an API token at {TOKEN_URL}, then either export KAGGLE_API_TOKEN=<token>, "
        "or export KAGGLE_USERNAME=<user> and KAGGLE_KEY=<key>, "
        f'or save {{"username": "<user>", "key": "<key>"}} to {config_dir() / "kaggle.json"} '
        "(chmod 600; KAGGLE_CONFIG_DIR moves that folder), or run `kaggle auth login`; "
        "or download the archive yourself and set data.source to its path"
    )


def _read_token_file(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise FishsegError(
            f"cannot read the Kaggle token file {path} ({type(exc).__name__}); {_how_to()}"
        ) from None
    return text or None


def _read_kaggle_json(path: Path) -> dict[str, str]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        # The decoder's message quotes the file's text, which holds the key: name the type only.
        raise FishsegError(
            f"{path} is not a valid kaggle.json ({type(exc).__name__}); it must hold "
            '{"username": "<user>", "key": "<key>"}; download a new one from ' + TOKEN_URL
        ) from None
    if not isinstance(raw, dict):
        raise FishsegError(f'{path} is not a valid kaggle.json: expected {{"username": ..., "key": ...}}')
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users: run chmod 600 %s", path, path)
    return {k: str(v) for k, v in raw.items() if k in ("username", "key") and v}


def _names_a_file(text: str) -> bool:
    """kaggle accepts a token or the path of a file holding it in the same variable."""
    try:
        return Path(text).expanduser().is_file()
    except (OSError, ValueError):  # too long for a path, or not one at all: a token
        return False


def find_credentials(env: Mapping[str, str] | None = None) -> KaggleCredentials:
    """Locate Kaggle credentials, in kaggle 2.2.4's order; raise :class:`FishsegError` if none."""
    env = os.environ if env is None else env
    token = env.get("KAGGLE_API_TOKEN", "").strip()
    if token:
        if _names_a_file(token):
            value = _read_token_file(Path(token).expanduser())
            if not value:
                raise FishsegError(f"KAGGLE_API_TOKEN names an empty file: {token}; {_how_to()}")
            return KaggleCredentials(origin=f"KAGGLE_API_TOKEN (file {token})", token=value)
        return KaggleCredentials(origin="KAGGLE_API_TOKEN", token=token)
    token_files = [Path.home() / ".kaggle" / "access_token", Path.home() / ".kaggle" / "access_token.txt"]
    for path in token_files:
        if path.is_file() and (value := _read_token_file(path)):
            return KaggleCredentials(origin=str(path), token=value)

    kaggle_json = config_dir(env) / "kaggle.json"
    from_file = _read_kaggle_json(kaggle_json) if kaggle_json.is_file() else {}
    username = env.get("KAGGLE_USERNAME") or from_file.get("username")
    key = env.get("KAGGLE_KEY") or from_file.get("key")
    if username and key:
        from_env = [bool(env.get("KAGGLE_USERNAME")), bool(env.get("KAGGLE_KEY"))]
        if all(from_env):
            origin = "KAGGLE_USERNAME/KAGGLE_KEY"
        elif any(from_env):
            origin = f"KAGGLE_USERNAME/KAGGLE_KEY and {kaggle_json}"
        else:
            origin = str(kaggle_json)
        return KaggleCredentials(origin=origin, username=username, key=key)

    oauth = Path.home() / ".kaggle" / "credentials.json"
    if oauth.is_file():
        try:
            has_refresh = bool(json.loads(oauth.read_text(encoding="utf-8")).get("refresh_token"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            has_refresh = False
        if has_refresh:
            return KaggleCredentials(origin=str(oauth), oauth_file=oauth)

    partial = ""
    if username and not key:
        partial = f" (a username was found in {'KAGGLE_USERNAME' if env.get('KAGGLE_USERNAME') else kaggle_json}, but no key)"
    elif key and not username:
        partial = (
            f" (a key was found in {'KAGGLE_KEY' if env.get('KAGGLE_KEY') else kaggle_json}, but no username)"
        )
    raise FishsegError(f"Kaggle credentials not found for data.source = kaggle{partial}: {_how_to()}")


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


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with URL query strings (signed URLs) cut and every secret masked."""
    text = _QUERY.sub(r"\1?...", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class _Transient(Exception):
    """A failure worth another attempt (the message is already safe to show)."""


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _permanent_http(status: int, dataset: str, creds: KaggleCredentials) -> FishsegError:
    if status == 401:
        return FishsegError(
            f"Kaggle rejected the credentials from {creds.origin} (HTTP 401): create a new API token at "
            f"{TOKEN_URL} and update {creds.origin}"
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


def _timeout_adapter(timeout_s: float) -> Any:
    """An HTTP adapter that gives every request a timeout (kagglesdk sets none)."""
    from requests.adapters import HTTPAdapter

    class TimeoutAdapter(HTTPAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout_s
            return super().send(request, **kwargs)

    return TimeoutAdapter()


def _open_client(creds: KaggleCredentials, token: str | None, timeout_s: float) -> Any:
    from kagglesdk import KaggleClient

    client = KaggleClient(username=creds.username, password=creds.key, api_token=token)
    client.__enter__()
    session = getattr(client.http_client(), "_session", None)
    if session is not None and hasattr(session, "mount"):
        adapter = _timeout_adapter(timeout_s)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return client


def _oauth_token(creds: KaggleCredentials, timeout_s: float) -> str:
    from kagglesdk import KaggleCredentials as OAuthCredentials

    client = _open_client(creds, None, timeout_s)
    try:
        oauth = OAuthCredentials.load(client, str(creds.oauth_file))
        token = oauth.get_access_token() if oauth else None
    finally:
        client.__exit__(None, None, None)
    if not token:
        raise FishsegError(
            f"the OAuth credentials in {creds.oauth_file} hold no usable token: run `kaggle auth login`"
        )
    return token


def _download_once(
    creds: KaggleCredentials,
    dataset: str,
    dest: Path,
    *,
    max_bytes: int,
    timeout_s: float,
    progress: bool,
    secrets: list[str],
) -> int:
    """One attempt: request, follow the redirect, stream to ``dest``; return the byte count."""
    from kagglesdk.datasets.types.dataset_api_service import ApiDownloadDatasetRequest

    owner, slug, version = parse_dataset(dataset)
    token = creds.token
    if creds.oauth_file is not None:
        token = _oauth_token(creds, timeout_s)
        secrets.append(token)
    request = ApiDownloadDatasetRequest()
    request.owner_slug = owner
    request.dataset_slug = slug
    request.dataset_version_number = version
    client = _open_client(creds, token, timeout_s)
    try:
        response = client.datasets.dataset_api_client.download_dataset(request)
        with response:
            declared_text = response.headers.get("Content-Length", "")
            declared = int(declared_text) if declared_text.isdigit() else None
            if declared is not None and declared > max_bytes:
                raise FishsegError(
                    f"Kaggle dataset {dataset} is {declared} bytes, more than data.max_archive_bytes = "
                    f"{max_bytes}: raise data.max_archive_bytes"
                )
            if declared is not None:
                check_free_space(dest.parent, declared, f"the Kaggle download of {dataset}")
            received = 0
            try:
                out = open(dest, "wb")  # noqa: SIM115 - write errors are told apart below
            except OSError as exc:
                raise FishsegError(
                    f"cannot write {dest}: {exc.strerror}; free some disk space and run again"
                ) from None
            with (
                out,
                tqdm(
                    total=declared,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=slug,
                    disable=not progress,
                ) as bar,
            ):
                for chunk in response.iter_content(_CHUNK):
                    received += len(chunk)
                    if received > max_bytes:
                        raise FishsegError(
                            f"Kaggle dataset {dataset} sent more than data.max_archive_bytes = {max_bytes} bytes: "
                            "raise data.max_archive_bytes"
                        )
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise FishsegError(
                            f"cannot write {dest}: {exc.strerror}; free some disk space and run again"
                        ) from None
                    bar.update(len(chunk))
            if declared is not None and received != declared:
                raise _Transient(f"transfer cut short: {received} of {declared} bytes")
            return received
    finally:
        client.__exit__(None, None, None)


def download(
    creds: KaggleCredentials,
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
    parse_dataset(dataset)  # a bad name fails before any import or network call
    try:
        import requests
        import urllib3
    except ImportError:  # pragma: no cover - requests comes with kaggle
        raise FishsegError(
            "data.source = kaggle needs the kaggle package: pip install kaggle==2.2.4"
        ) from None
    try:
        import kagglesdk  # noqa: F401
    except ImportError:
        raise FishsegError(
            "data.source = kaggle needs the kaggle package: pip install kaggle==2.2.4"
        ) from None

    transient = (
        _Transient,
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
        urllib3.exceptions.HTTPError,
    )
    secrets = creds.secrets()
    attempts = retries + 1
    log.info("downloading Kaggle dataset %s (credentials: %s)", dataset, creds.origin)
    for attempt in range(1, attempts + 1):
        try:
            size = _download_once(
                creds,
                dataset,
                dest,
                max_bytes=max_bytes,
                timeout_s=timeout_s,
                progress=progress,
                secrets=secrets,
            )
            log.info("downloaded %s: %d bytes", dataset, size)
            return dest
        except FishsegError:
            raise
        except requests.HTTPError as exc:
            status = _http_status(exc)
            if status is None or not (status >= 500 or status == 429):
                raise _permanent_http(status or 0, dataset, creds) from None
            reason = f"HTTP {status}"
        except transient as exc:
            reason = redact(f"{type(exc).__name__}: {exc}", secrets)
        except Exception as exc:
            # Anything else is a bug or an unusual environment: report it safely, without retrying.
            raise FishsegError(
                f"Kaggle download of {dataset} failed: {redact(f'{type(exc).__name__}: {exc}', secrets)}"
            ) from None
        if attempt == attempts:
            raise FishsegError(
                f"Kaggle download of {dataset} failed after {attempts} attempts (last: {reason}): check the network "
                "connection (and proxy settings) and run again, raise data.download_retries, or download the "
                "archive yourself and set data.source to its path"
            )
        delay = min(backoff_s * 2 ** (attempt - 1), _MAX_DELAY_S) * (1.0 + 0.1 * random.random())
        log.warning(
            "Kaggle download attempt %d/%d failed (%s); retrying in %.1f s", attempt, attempts, reason, delay
        )
        time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
