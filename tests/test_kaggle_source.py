"""data.source = kaggle, offline up to the socket.

The real client stack runs: kagglesdk builds the DownloadDataset call, ``requests``
sends it, follows the redirect to "storage" and streams the archive; then the same
safe extraction as for a local zip. Only the far end is fake: a loopback HTTP server.
``KAGGLE_API_ENVIRONMENT=LOCALHOST`` (kaggle's own switch) points the client at
``http://localhost``, and ``http_proxy`` routes that to the server's port, so nothing
in the code under test is patched.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fishseg.errors import FishsegError
from fishseg.params import DataParams
from fishseg.sources.fetch import fetch
from fishseg.sources.kaggle import KaggleCredentials, config_dir, find_credentials, parse_dataset, redact
from fishseg.sources.layout import image_dir

from .helpers import assert_untouched, fish_dataset, image_bytes, make_good_raw, write, zip_tree

USER = "fish-user"
KEY = "0123456789abcdef-fake-kaggle-key"
TOKEN = "KGAT_fake_token_4f2b9c"
API_PATH = "/api/v1/datasets.DatasetApiService/DownloadDataset"


class FakeKaggle(ThreadingHTTPServer):
    """Answers as api.kaggle.com (a POST, then a 302 to storage) and as storage (the zip).

    ``api`` and ``storage`` are scripts of what to do on each request, in order; when a
    script runs out, it succeeds. Storage actions: ok, chunked (no Content-Length: the size
    is known only by streaming), drop (half the body, then the connection closes), stall
    (half the body, then silence), or an HTTP status.
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

    def do_POST(self) -> None:
        _, path = self._record()
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
            body = json.dumps({"code": action, "message": f"failure {action}"}).encode()
            self._send(int(action), body, "application/json")

    def do_GET(self) -> None:
        self._record()
        action = self.server.storage.pop(0) if self.server.storage else "ok"
        data = self.server.archive
        if isinstance(action, int):
            self._send(action, b"storage error", "text/plain")
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
    raw_dir = tmp_path / "data" / "raw"
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


def test_missing_credentials_stop_before_any_import_or_network(clean_env: Path, raw, monkeypatch) -> None:
    raw_dir, before = raw
    connects: list = []

    def no_network(*args, **kwargs):
        connects.append(args)
        raise AssertionError(f"network call: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    # Importing kaggle or kagglesdk would now raise ImportError instead of our message.
    monkeypatch.setitem(sys.modules, "kaggle", None)
    monkeypatch.setitem(sys.modules, "kagglesdk", None)

    with pytest.raises(FishsegError) as info:
        fetch(kaggle_params(), raw_dir, progress=False)

    message = str(info.value)
    needles = [
        "Kaggle credentials not found",
        "KAGGLE_USERNAME",
        "KAGGLE_KEY",
        "KAGGLE_API_TOKEN",
        str(clean_env / ".config" / "kaggle" / "kaggle.json"),
        "https://www.kaggle.com/settings/api",
        "data.source",
    ]
    for needle in needles:
        assert needle in message, message
    assert connects == []
    assert_untouched(raw_dir, before)
    assert list(clean_env.iterdir()) == []  # no config folders created either


def test_credentials_from_the_environment(clean_env: Path, monkeypatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    creds = find_credentials()
    assert (creds.origin, creds.username, creds.key) == ("KAGGLE_USERNAME/KAGGLE_KEY", USER, KEY)
    assert KEY not in repr(creds)


def test_token_from_the_environment_wins(clean_env: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    assert find_credentials().token == TOKEN
    token_file = write(tmp_path / "token.txt", f"{TOKEN}\n".encode())
    monkeypatch.setenv("KAGGLE_API_TOKEN", str(token_file))
    creds = find_credentials()
    assert creds.token == TOKEN and str(token_file) in creds.origin
    assert TOKEN not in repr(creds)


@pytest.mark.parametrize("where", ["home", "config_dir", "xdg"])
def test_kaggle_json(clean_env: Path, monkeypatch, tmp_path: Path, where: str) -> None:
    if where == "home":
        path = clean_env / ".kaggle" / "kaggle.json"
    elif where == "config_dir":
        monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "cfg"))
        path = tmp_path / "cfg" / "kaggle.json"
    else:  # no ~/.kaggle: kaggle 2.2.4 falls back to ~/.config/kaggle on Linux
        path = clean_env / ".config" / "kaggle" / "kaggle.json"
    write(path, json.dumps({"username": USER, "key": KEY}).encode()).chmod(0o600)
    assert config_dir() == path.parent
    creds = find_credentials()
    assert (creds.origin, creds.username, creds.key) == (str(path), USER, KEY)


def test_half_credentials_and_broken_kaggle_json(clean_env: Path, monkeypatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    with pytest.raises(FishsegError, match="a username was found in KAGGLE_USERNAME, but no key"):
        find_credentials()
    path = write(clean_env / ".kaggle" / "kaggle.json", f'{{"username": "{USER}", "key": "{KEY}"'.encode())
    with pytest.raises(FishsegError) as info:
        find_credentials()
    assert str(path) in str(info.value) and "not a valid kaggle.json" in str(info.value)
    assert_no_secret(str(info.value))


def test_bad_dataset_name_fails_early(clean_env: Path) -> None:
    with pytest.raises(FishsegError, match="data.kaggle_dataset = 'just-a-name'"):
        parse_dataset("just-a-name")
    assert parse_dataset("crowww/a-large-scale-fish-dataset/2") == ("crowww", "a-large-scale-fish-dataset", 2)


def test_redact_masks_secrets_and_signed_urls() -> None:
    creds = KaggleCredentials(origin="env", username=USER, key=KEY)
    text = redact(f"GET http://h/x.zip?sig=abc failed for {KEY}", creds.secrets())
    assert text == "GET http://h/x.zip?... failed for ***"
    with pytest.raises(AssertionError):  # the leak check itself would notice a leak
        assert_no_secret(f"Authorization: Basic {creds.secrets()[1]}")


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
    (storage,) = server.calls("/storage/fish.zip")
    assert storage["host"] == "127.0.0.1"
    assert "Authorization" not in storage["headers"]  # credentials stay with Kaggle

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
    server.storage = ["drop", "stall"]
    caplog.set_level(logging.DEBUG)

    summary = fetch(kaggle_params(download_timeout_s=0.5), raw_dir, progress=False)

    assert summary["pairs"] == {"Red Mullet": 2, "Trout": 3}
    assert len(server.calls(API_PATH)) == 4
    assert len(server.calls("/storage/fish.zip")) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and "attempt 1/4 failed (HTTP 503)" in warnings[0]
    assert_no_secret(caplog.text)


def test_network_failure_mid_download_leaves_raw_untouched(
    server: FakeKaggle, raw, monkeypatch, caplog, capsys
):
    raw_dir, before = raw
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    server.storage = ["drop"] * 10
    caplog.set_level(logging.DEBUG)

    with pytest.raises(FishsegError) as info:
        fetch(kaggle_params(download_retries=2), raw_dir, progress=False)

    message = str(info.value)
    assert "Kaggle download of crowww/a-large-scale-fish-dataset failed after 3 attempts" in message
    assert "run again" in message and "data.source" in message
    assert "s3cr3tsig" not in message  # signed URLs are cut from messages
    assert len(server.calls("/storage/fish.zip")) == 3
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

    assert len(server.calls("/storage/fish.zip")) == 1
    assert_untouched(raw_dir, before)


def test_download_streamed_over_the_cap_is_refused(server: FakeKaggle, raw, monkeypatch) -> None:
    """No Content-Length (chunked transfer): the bytes are counted as they arrive."""
    raw_dir, before = raw
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    server.storage = ["chunked"]

    with pytest.raises(FishsegError, match="sent more than data.max_archive_bytes = 1000 bytes"):
        fetch(kaggle_params(max_archive_bytes=1000), raw_dir, progress=False)

    assert len(server.calls("/storage/fish.zip")) == 1
    assert_untouched(raw_dir, before)
    # The same chunked transfer under the cap goes through: the cap, not the framing, refused it.
    server.storage = ["chunked"]
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
