"""data.source = kaggle, offline up to the socket.

The real client stack runs: the kaggle package looks up and checks the credentials,
kagglesdk builds the DownloadDataset call, ``requests`` sends it, follows the redirect
to "storage", and the archive is read from there; then the same safe extraction as for
a local zip. Only the far end is fake: a loopback HTTP server. ``KAGGLE_API_ENVIRONMENT=
LOCALHOST`` (kaggle's own switch) points the client at ``http://localhost``, and
``http_proxy`` routes that to the server's port, so nothing in the code under test is
patched.

Each attempt that gets past the API GETs the storage URL twice: the SDK follows the
redirect (headers only), then the archive is read from the same URL with a timeout.
Storage scripts below count both.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fishseg.errors import FishsegError
from fishseg.params import DataParams
from fishseg.paths import Paths
from fishseg.sources.fetch import fetch
from fishseg.sources.kaggle import (
    MAX_RETRY_AFTER_S,
    KaggleAccess,
    authenticate,
    parse_dataset,
    redact,
    retry_after_s,
)
from fishseg.sources.layout import image_dir

from .helpers import (
    REPO,
    assert_untouched,
    fish_dataset,
    image_bytes,
    make_good_raw,
    tiny,
    write,
    write_params,
    zip_tree,
)

USER = "fish-user"
KEY = "0123456789abcdef-fake-kaggle-key"
TOKEN = "KGAT_fake_token_4f2b9c"
API_PATH = "/api/v1/datasets.DatasetApiService/DownloadDataset"
INTROSPECT_PATH = "/api/v1/security.OAuthService/IntrospectToken"
STORAGE_PATH = "/storage/fish.zip"


class FakeKaggle(ThreadingHTTPServer):
    """Answers as api.kaggle.com (a POST, then a 302 to storage) and as storage (the zip).

    ``api`` and ``storage`` are scripts of what to do on each request, in order; when a
    script runs out, it succeeds. Storage actions: ok, chunked (no Content-Length: the size
    is known only by streaming), drop (half the body, then the connection closes), stall
    (half the body, then silence), an HTTP status, or a (status, Retry-After value) pair;
    the API takes statuses and pairs. Access tokens are checked as Kaggle does
    (IntrospectToken): ``TOKEN`` is active, for ``USER``.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, archive: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.archive = archive
        self.api: list[str | int] = []
        self.storage: list[str | int] = []
        self.requests: list[dict] = []

    @property
    def port(self) -> int:
        return self.server_address[1]

    def calls(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeKaggle

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _record(self) -> tuple[str, str]:
        # Through a proxy the request line holds the absolute URL.
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append(
            {
                "method": self.command,
                "host": url.hostname,
                "path": url.path,
                "headers": dict(self.headers),
                "body": body,
            }
        )
        return url.hostname or "", url.path

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, action: int | tuple, content_type: str) -> None:
        status, retry_after = action if isinstance(action, tuple) else (action, None)
        body = json.dumps({"code": status, "message": f"failure {status}"}).encode()
        self._send(status, body, content_type, {"Retry-After": retry_after} if retry_after else None)

    def do_POST(self) -> None:
        _, path = self._record()
        if path == INTROSPECT_PATH:
            token = json.loads(self.server.requests[-1]["body"] or b"{}").get("token")
            active = {"active": True, "username": USER} if token == TOKEN else {"active": False}
            self._send(200, json.dumps(active).encode(), "application/json")
            return
        action = self.server.api.pop(0) if self.server.api else "redirect"
        if path != API_PATH:
            self._send(404, b'{"code": 404, "message": "no such method"}', "application/json")
        elif action == "redirect":
            # Signed storage URL on another host: requests must not forward credentials there.
            location = f"http://127.0.0.1:{self.server.port}/storage/fish.zip?X-Goog-Signature=s3cr3tsig"
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._error(action, "application/json")

    def do_GET(self) -> None:
        self._record()
        action = self.server.storage.pop(0) if self.server.storage else "ok"
        data = self.server.archive
        if isinstance(action, int | tuple):
            self._error(action, "text/plain")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        if action == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(data), 4096):
                part = data[start : start + 4096]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if action == "ok":
            self.wfile.write(data)
            return
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        if action == "stall":
            time.sleep(3)
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def archive(tmp_path: Path) -> bytes:
    """The real archive's shape: Fish_Dataset/Fish_Dataset, NA_Fish_Dataset, a README."""
    src = fish_dataset(tmp_path / "kaggle-src", {"Trout": 3, "Red Mullet": 2})
    write(src / "NA_Fish_Dataset" / "Trout" / "00001.png", image_bytes(7))
    write(src / "Fish_Dataset" / "README.txt", b"A Large-Scale Fish Dataset")
    return zip_tree(src, tmp_path / "served.zip").read_bytes()


@pytest.fixture(scope="module", autouse=True)
def kaggle_at_localhost(tmp_path_factory) -> None:
    """kaggle reads ``KAGGLE_API_ENVIRONMENT`` and its config folder once, when imported: import
    it (again) here with ``LOCALHOST`` and an empty home, as a fresh process would see them."""
    home = tmp_path_factory.mktemp("kaggle-home")
    saved = {k: os.environ.get(k) for k in ("KAGGLE_API_ENVIRONMENT", "HOME", "KAGGLE_CONFIG_DIR")}
    os.environ.update(KAGGLE_API_ENVIRONMENT="LOCALHOST", HOME=str(home))
    os.environ.pop("KAGGLE_CONFIG_DIR", None)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its import-time help, with no credentials
            importlib.reload(importlib.import_module("kaggle.api.kaggle_api_extended"))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch) -> Path:
    """No credentials, no proxies, HOME in tmp_path; returns HOME."""
    import os

    for name in list(os.environ):
        if name.startswith("KAGGLE_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home


@pytest.fixture
def server(archive: bytes, clean_env: Path, monkeypatch) -> Iterator[FakeKaggle]:
    srv = FakeKaggle(archive)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{srv.port}")
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def raw(tmp_path: Path) -> tuple[Path, dict]:
    raw_dir = Paths(tmp_path).raw_dir
    return raw_dir, make_good_raw(raw_dir)


def kaggle_params(**overrides) -> DataParams:
    values = {
        "source": "kaggle",
        "download_retries": 3,
        "download_backoff_s": 0.01,
        "download_timeout_s": 5.0,
    }
    return DataParams(**(values | overrides))


def assert_no_secret(*texts: str) -> None:
    basic = base64.b64encode(f"{USER}:{KEY}".encode()).decode()
    for text in texts:
        for secret in (KEY, basic, TOKEN):
            assert secret not in text


# --------------------------------------------------------------------------- credentials


def test_missing_credentials_stop_before_any_network_call_or_output(
    clean_env: Path, raw, monkeypatch, capsys
) -> None:
    raw_dir, before = raw
    connects: list = []

    def no_network(*args, **kwargs):
        connects.append(args)
        raise AssertionError(f"network call: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)

    with pytest.raises(FishsegError) as info:
        fetch(kaggle_params(), raw_dir, progress=False)

    message = str(info.value)
    needles = [
        "Kaggle credentials not found",
        "KAGGLE_USERNAME",
        "KAGGLE_KEY",
        "KAGGLE_API_TOKEN",
        "kaggle.json",
        "kaggle auth login",
        "https://www.kaggle.com/settings/api",
        "data.source",
    ]
    for needle in needles:
        assert needle in message, message
    assert connects == []
    assert_untouched(raw_dir, before)
    assert "Authentication required" not in capsys.readouterr().out  # kaggle's help stays out of our output


def test_credentials_are_kaggles_own_lookup(clean_env: Path, monkeypatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    access = authenticate()
    assert "API key" in access.origin
    assert access.api.config_values["username"] == USER
    assert KEY in access.secrets and KEY not in repr(access)


def test_token_wins_and_is_checked_with_kaggle(server: FakeKaggle, monkeypatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    access = authenticate()
    assert "access token" in access.origin and TOKEN in access.secrets
    assert server.calls(INTROSPECT_PATH), "the token was not checked with Kaggle"
    assert TOKEN not in repr(access)


def test_kaggle_json_through_the_download_stage(server: FakeKaggle, clean_env: Path, tmp_path: Path) -> None:
    """kaggle reads its config folder once, at import: a fresh process, as the stage runs."""
    write(clean_env / ".kaggle" / "kaggle.json", json.dumps({"username": USER, "key": KEY}).encode()).chmod(
        0o600
    )
    root = tmp_path / "project"
    root.mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n")
    write_params(root, tiny(data={"source": "kaggle", "download_backoff_s": 0.01, "download_timeout_s": 5.0}))
    done = subprocess.run(
        [sys.executable, str(REPO / "stages" / "download.py"), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (api,) = server.calls(API_PATH)
    assert api["headers"]["Authorization"] == "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
    assert sorted(p.name for p in image_dir(root / "work" / "raw", "Trout").iterdir())[:1] == ["00000.png"]
    assert_no_secret(done.stdout, done.stderr)


def test_unreadable_kaggle_json_counts_as_none_and_is_not_quoted(clean_env: Path, tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    write(config / "kaggle.json", f'{{"username": "{USER}", "key": "{KEY}"'.encode())
    code = (
        "from fishseg.sources.kaggle import authenticate\n"
        "from fishseg.errors import FishsegError\n"
        "try:\n    authenticate()\nexcept FishsegError as exc:\n    print(exc)\n"
    )
    env = {**os.environ, "HOME": str(clean_env), "KAGGLE_CONFIG_DIR": str(config)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )
    # kaggle skips a kaggle.json it cannot parse: no credentials, and nothing of the file in the message.
    assert "Kaggle credentials not found" in out.stdout and "kaggle.json" in out.stdout
    assert_no_secret(out.stdout, out.stderr)


def test_bad_dataset_name_fails_early(clean_env: Path) -> None:
    with pytest.raises(FishsegError, match="data.kaggle_dataset = 'just-a-name'"):
        parse_dataset("just-a-name")
    assert parse_dataset("crowww/a-large-scale-fish-dataset/2") == ("crowww", "a-large-scale-fish-dataset", 2)


def test_redact_masks_secrets_and_signed_urls(clean_env: Path, monkeypatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    access = authenticate()
    text = redact(f"GET http://h/x.zip?sig=abc failed for {KEY}", access.secrets)
    assert text == "GET http://h/x.zip?... failed for ***"
    basic = base64.b64encode(f"{USER}:{KEY}".encode()).decode()
    assert redact(f"Authorization: Basic {basic}", access.secrets) == "Authorization: Basic ***"
    with pytest.raises(AssertionError):  # the leak check itself would notice a leak
        assert_no_secret(f"Authorization: Basic {basic}")
    assert KaggleAccess(api=None, origin="x", secrets=(KEY,)).__repr__().count(KEY) == 0


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s({"Retry-After": "7"}, now) == 7.0
    assert (
        retry_after_s({"Retry-After": format_datetime(now + timedelta(seconds=90), usegmt=True)}, now) == 90.0
    )
    assert (
        retry_after_s({"Retry-After": format_datetime(now - timedelta(seconds=5), usegmt=True)}, now) == 0.0
    )
    assert retry_after_s({"Retry-After": "soon"}, now) is None
    assert retry_after_s({}, now) is None


# --------------------------------------------------------------------------- downloads


def test_download_extracts_into_canonical_layout(
    server: FakeKaggle, raw, monkeypatch, caplog, capsys
) -> None:
    raw_dir, _ = raw
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    caplog.set_level(logging.DEBUG)  # urllib3 and kagglesdk debug lines included

    summary = fetch(kaggle_params(), raw_dir, progress=True)

    assert summary["source"] == "kaggle"
    assert summary["location"] == "crowww/a-large-scale-fish-dataset"
    assert summary["pairs"] == {"Red Mullet": 2, "Trout": 3}
    assert any("NA_Fish_Dataset ignored" in note for note in summary["notes"])
    assert sorted(p.name for p in image_dir(raw_dir, "Trout").iterdir()) == [
        "00000.png",
        "00001.png",
        "00002.png",
    ]
    assert sorted(p.name for p in raw_dir.iterdir()) == ["Fish_Dataset"]  # the zip itself is gone
    assert sorted(p.name for p in raw_dir.parent.iterdir()) == ["raw"]

    (api,) = server.calls(API_PATH)
    assert api["method"] == "POST" and api["host"] == "localhost"
    assert json.loads(api["body"]) == {"ownerSlug": "crowww", "datasetSlug": "a-large-scale-fish-dataset"}
    assert api["headers"]["Authorization"] == "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
    storage = server.calls(STORAGE_PATH)
    assert len(storage) == 2 and {c["host"] for c in storage} == {"127.0.0.1"}
    assert all("Authorization" not in c["headers"] for c in storage)  # credentials stay with Kaggle

    out = capsys.readouterr()
    assert "Dataset URL" not in out.out  # kaggle's own prints are not involved
    assert "Starting new HTTP connection" in caplog.text  # the capture does include urllib3's debug lines
    assert_no_secret(caplog.text, out.out, out.err, json.dumps(summary))


def test_token_is_sent_as_bearer(server: FakeKaggle, raw, monkeypatch, caplog) -> None:
    raw_dir, _ = raw
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)

    fetch(kaggle_params(), raw_dir, progress=False)

    (api,) = server.calls(API_PATH)
    assert api["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert_no_secret(caplog.text)


def test_transient_failures_are_retried(server: FakeKaggle, raw, monkeypatch, caplog) -> None:
    """503 from the API, a cut transfer, a stalled one (timeout), then success."""
    raw_dir, _ = raw
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    server.api = [503]
    server.storage = ["ok", "drop", "ok", "stall"]  # (the SDK's look, then the read) per attempt
    caplog.set_level(logging.DEBUG)

    summary = fetch(kaggle_params(download_timeout_s=0.5), raw_dir, progress=False)

    assert summary["pairs"] == {"Red Mullet": 2, "Trout": 3}
    assert len(server.calls(API_PATH)) == 4
    assert len(server.calls(STORAGE_PATH)) == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and "attempt 1/4 failed (HTTP 503)" in warnings[0]
    assert warnings[0].endswith(", backoff")
    assert_no_secret(caplog.text)


def test_retry_after_is_honoured_from_the_api_and_from_storage(server: FakeKaggle, raw, monkeypatch, caplog):
    raw_dir, _ = raw
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    server.api = [(429, "1")]
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=4), usegmt=True)  # whole seconds
    server.storage = ["ok", (503, soon)]
    caplog.set_level(logging.INFO)

    started = time.monotonic()
    summary = fetch(kaggle_params(), raw_dir, progress=False)  # backoff 0.01 s: the servers' waits rule

    assert summary["pairs"] == {"Red Mullet": 2, "Trout": 3}
    assert time.monotonic() - started >= 2.5  # 1 s, then what was left until the date (1.5-3 s)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "HTTP 429" in warnings[0] and "retrying in 1.0 s, as the server asked (Retry-After)" in warnings[0]
    assert "HTTP 503" in warnings[1] and "as the server asked (Retry-After)" in warnings[1]


def test_a_retry_after_too_long_stops_with_run_again_later(server: FakeKaggle, raw, monkeypatch) -> None:
    raw_dir, before = raw
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    server.api = [(429, str(int(MAX_RETRY_AFTER_S) + 1))]
    started = time.monotonic()
    with pytest.raises(FishsegError, match="Kaggle asks to wait 601 s .*run again later"):
        fetch(kaggle_params(), raw_dir, progress=False)
    assert time.monotonic() - started < 30
    assert len(server.calls(API_PATH)) == 1
    assert_untouched(raw_dir, before)


def test_network_failure_mid_download_leaves_raw_untouched(
    server: FakeKaggle, raw, monkeypatch, caplog, capsys
):
    raw_dir, before = raw
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    server.storage = ["ok", "drop"] * 3
    caplog.set_level(logging.DEBUG)

    with pytest.raises(FishsegError) as info:
        fetch(kaggle_params(download_retries=2), raw_dir, progress=False)

    message = str(info.value)
    assert "Kaggle download of crowww/a-large-scale-fish-dataset failed after 3 attempts" in message
    assert "run again" in message and "data.source" in message
    assert "s3cr3tsig" not in message  # signed URLs are cut from messages
    assert len(server.calls(STORAGE_PATH)) == 6
    assert_untouched(raw_dir, before)
    out = capsys.readouterr()
    assert_no_secret(message, caplog.text, out.out, out.err)


@pytest.mark.parametrize(
    ("status", "needle"),
    [(401, "rejected the credentials"), (403, "refused access"), (404, "dataset not found")],
)
def test_client_errors_are_not_retried(
    server: FakeKaggle, raw, monkeypatch, caplog, status: int, needle: str
):
    raw_dir, before = raw
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    server.api = [status]
    caplog.set_level(logging.DEBUG)

    with pytest.raises(FishsegError) as info:
        fetch(kaggle_params(), raw_dir, progress=False)

    assert needle in str(info.value) and f"HTTP {status}" in str(info.value)
    assert len(server.calls(API_PATH)) == 1
    assert_untouched(raw_dir, before)
    assert_no_secret(str(info.value), caplog.text)


def test_download_declared_over_the_cap_is_refused(server: FakeKaggle, raw, monkeypatch) -> None:
    """The Content-Length says too much: refused before a byte of the body is read."""
    raw_dir, before = raw
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)

    with pytest.raises(FishsegError, match=r"is \d+ bytes, more than data.max_archive_bytes = 1000"):
        fetch(kaggle_params(max_archive_bytes=1000), raw_dir, progress=False)

    assert len(server.calls(STORAGE_PATH)) == 2
    assert_untouched(raw_dir, before)


def test_download_streamed_over_the_cap_is_refused(server: FakeKaggle, raw, monkeypatch) -> None:
    """No Content-Length (chunked transfer): the bytes are counted as they arrive."""
    raw_dir, before = raw
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    # Two requests reach storage: the SDK's redirect (closed unread), then the streamed read.
    server.storage = ["chunked", "chunked"]

    with pytest.raises(FishsegError, match="sent more than data.max_archive_bytes = 1000 bytes"):
        fetch(kaggle_params(max_archive_bytes=1000), raw_dir, progress=False)

    assert len(server.calls(STORAGE_PATH)) == 2
    assert_untouched(raw_dir, before)
    # The same chunked transfer under the cap goes through: the cap, not the framing, refused it.
    server.storage = ["chunked", "chunked"]
    assert fetch(kaggle_params(), raw_dir, progress=False)["pairs"] == {"Red Mullet": 2, "Trout": 3}


def test_downloaded_non_zip_is_refused(server: FakeKaggle, raw, monkeypatch) -> None:
    raw_dir, before = raw
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    server.archive = b"<html>maintenance</html>"

    with pytest.raises(FishsegError, match="not a zip archive: .*a-large-scale-fish-dataset.zip"):
        fetch(kaggle_params(), raw_dir, progress=False)

    assert_untouched(raw_dir, before)


def test_oauth_credentials_from_kaggle_auth_login(server: FakeKaggle, raw, clean_env: Path, caplog) -> None:
    raw_dir, _ = raw
    expires = (datetime.now(UTC) + timedelta(hours=6)).isoformat()
    stored = {"refresh_token": "refresh-fake", "access_token": TOKEN, "access_token_expiration": expires}
    write(clean_env / ".kaggle" / "credentials.json", json.dumps(stored).encode())
    caplog.set_level(logging.DEBUG)

    summary = fetch(kaggle_params(), raw_dir, progress=False)

    assert summary["pairs"] == {"Red Mullet": 2, "Trout": 3}
    (api,) = server.calls(API_PATH)
    assert api["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert_no_secret(caplog.text)
