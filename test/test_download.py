"""`bisenetv2 download` against a local HTTP server (never the internet): success, cache reuse,
wrong checksum, broken file, HTTP error and offline behaviour."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch

from bisenetv2_ros.cli import commands as cli
from bisenetv2_ros.models.bisenetv2 import BiSeNetV2, BiSeNetV2Config
from bisenetv2_ros.weights import known_weights
from bisenetv2_ros.weights.importers_v2 import mmseg_units
from bisenetv2_ros.weights.key_maps import key_pairs

NAME = "mmseg-cityscapes"



def make_mmseg_checkpoint(path: Path, seed: int = 0) -> tuple[Path, BiSeNetV2]:
    """A random full-width BiSeNetV2 saved in mmsegmentation's layout ({meta, state_dict} with its key
    names, plus an auxiliary head the importer must drop), by inverting the importer's key map.
    The segmentation head is kept narrow (C_t=32) so the file stays small."""
    torch.manual_seed(seed)
    config = BiSeNetV2Config(num_classes=19, head_channels=32, aux_heads=False, upsample_mode="bilinear",
                             ge_depthwise_relu=True)
    model = BiSeNetV2(config).eval()
    ours = model.state_dict()
    pairs = key_pairs(mmseg_units(config), set(ours))
    theirs = {foreign: ours[key].clone() for key, foreign in pairs}
    theirs["auxiliary_head.0.conv_seg.weight"] = torch.zeros(19, 16, 1, 1)
    torch.save({"meta": {"mmseg_version": "0.17.0"}, "state_dict": theirs}, path)
    return path, model


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An HTTP server on 127.0.0.1 (ephemeral port) serving a synthetic checkpoint under the published
    file name; yields (base URL, file path, model)."""
    root = tmp_path_factory.mktemp("server")
    path, model = make_mmseg_checkpoint(root / known_weights.KNOWN_WEIGHTS[NAME].file_name)
    (root / "garbage.pth").write_bytes(b"\x00" * 1000)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", path, model
    server.shutdown()
    server.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("BISENETV2_CACHE", str(folder))
    monkeypatch.delenv("BISENETV2_DOWNLOAD_BASE", raising=False)
    return folder


def publish_checksum(monkeypatch, sha256_prefix: str) -> None:
    """The synthetic file has its own SHA-256; make the known entry state its prefix."""
    entry = dataclasses.replace(known_weights.KNOWN_WEIGHTS[NAME], sha256_prefix=sha256_prefix)
    monkeypatch.setitem(known_weights.KNOWN_WEIGHTS, NAME, entry)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_converts_and_makes_the_name_loadable(served, cache, monkeypatch, capsys):
    base, source, model = served
    publish_checksum(monkeypatch, sha256(source)[:8])
    monkeypatch.setenv("BISENETV2_DOWNLOAD_BASE", base)
    assert cli.main(["download", NAME, "--quiet"]) == 0
    out = capsys.readouterr().out
    final = cache / known_weights.KNOWN_WEIGHTS[NAME].file_name
    assert f"downloaded and verified: {final}" in out and f"--weights {NAME}" in out
    assert final.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == [final.name]  # no temporary file left
    loaded, info = known_weights.load_model(NAME)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)
    assert info.metrics["val_miou"] == pytest.approx(73.21) and info.provenance["imported_from"] == "mmsegmentation"

    # a second run finds the verified copy and fetches nothing (the server is not even asked)
    monkeypatch.setenv("BISENETV2_DOWNLOAD_BASE", "http://127.0.0.1:9/unreachable")
    assert cli.main(["download", NAME, "--quiet"]) == 0
    assert "already in the cache (checksum verified)" in capsys.readouterr().out

    # --list now shows it as cached
    assert cli.main(["download", "--list"]) == 0
    listing = capsys.readouterr().out
    line = next(l for l in listing.splitlines() if l.startswith(NAME + " "))
    assert "73.21" in line and "75.74" in line and "[cached]" in line


def test_explicit_url_option(served, cache, monkeypatch, capsys):
    base, source, _ = served
    publish_checksum(monkeypatch, sha256(source)[:8])
    assert cli.main(["download", NAME, "--quiet", "--url", f"{base}/{source.name}"]) == 0
    assert (cache / source.name).read_bytes() == source.read_bytes()


def test_wrong_checksum_leaves_nothing_in_the_cache(served, cache, monkeypatch, capsys):
    base, source, _ = served
    publish_checksum(monkeypatch, "00000000" if not sha256(source).startswith("00000000") else "11111111")
    monkeypatch.setenv("BISENETV2_DOWNLOAD_BASE", base)
    assert cli.main(["download", NAME, "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checksum mismatch" in err[0] and "discarded" in err[0]
    assert list(cache.iterdir()) == []


def test_a_file_that_is_not_a_checkpoint_is_rejected(served, cache, monkeypatch, capsys):
    base, _, _ = served
    garbage = b"\x00" * 1000
    publish_checksum(monkeypatch, hashlib.sha256(garbage).hexdigest()[:8])
    assert cli.main(["download", NAME, "--quiet", "--url", f"{base}/garbage.pth"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a usable mmsegmentation checkpoint" in err[0]
    assert list(cache.iterdir()) == []


def test_http_error_is_one_line(served, cache, capsys):
    base, _, _ = served
    assert cli.main(["download", NAME, "--quiet", "--url", f"{base}/missing.pth"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bisenetv2 download: error: 127.0.0.1:{base.rsplit(':', 1)[1]} answered HTTP 404 "
                   f"File not found for {base}/missing.pth"]
    assert list(cache.iterdir()) == []


def test_offline_is_one_line_and_non_zero(cache, monkeypatch, capsys):
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("BISENETV2_DOWNLOAD_BASE", f"http://127.0.0.1:{port}/weights")
    assert cli.main(["download", NAME, "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"bisenetv2 download: error: cannot reach 127.0.0.1:{port}")
    assert "are you offline?" in err[0]
    assert list(cache.iterdir()) == []


def test_unknown_name_lists_the_known_ones(cache, capsys):
    assert cli.main(["download", "imagenet"]) == 1
    err = capsys.readouterr().err
    assert "unknown weights 'imagenet'" in err and NAME in err


# --------------------------------------------------------------------------------------------
# Malformed answers, a server that drips, special files: one line each, nothing left in the cache


class CannedServer:
    """A TCP server on 127.0.0.1 answering every request with ``answer`` bytes (then, with ``drip``,
    one byte every 0.1 s for up to 20 s), then closing: HTTP answers http.server would never send."""

    def __init__(self, answer: bytes, drip: bool = False) -> None:
        import socketserver
        import time

        canned = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # the request's lines, up to the blank one
                self.wfile.write(answer)
                self.wfile.flush()
                ends = time.monotonic() + 20
                while canned.dripping and drip and time.monotonic() < ends:
                    time.sleep(0.1)
                    try:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    except OSError:
                        return

        self.dripping = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{known_weights.KNOWN_WEIGHTS[NAME].file_name}"

    def close(self) -> None:
        self.dripping = False
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("answer,message", [
    (b"garbage\r\n\r\n", "sent a malformed HTTP answer for {url} (BadStatusLine: "),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\nZZ\r\n",
     "closed the connection 0 bytes into a chunk of {url}; the file was discarded; try again"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789",
     "download of {url} stopped after 10 of 1000 bytes; try again"),
    (b"", "closed the connection without an HTTP answer for {url} (Remote end closed connection"),
], ids=["bad-status-line", "incomplete-read", "short-body", "no-answer"])
def test_malformed_http_answers_are_one_line(cache, capsys, answer, message):
    server = CannedServer(answer)
    try:
        assert cli.main(["download", NAME, "--quiet", "--url", server.url]) == 1
    finally:
        server.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(url=server.url) in err[0], err
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_dripping_server_meets_the_overall_deadline(cache):
    """Each byte arrives well within the per-read timeout; only the overall deadline ends the transfer."""
    from bisenetv2_ros.weights.download import DownloadError, download_weights

    server = CannedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", drip=True)
    try:
        with pytest.raises(DownloadError, match=r"took longer than 0.5 s \(\d+ bytes received\); the file was discarded"):
            download_weights(NAME, url=server.url, timeout=5.0, deadline=0.5)
    finally:
        server.close()
    assert list(cache.iterdir()) == []


def test_a_fifo_behind_a_file_url_is_refused(cache, tmp_path, capsys):
    import os

    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    assert cli.main(["download", NAME, "--quiet", "--url", fifo.as_uri()]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bisenetv2 download: error: --url {fifo} is a FIFO (named pipe), not a regular file; "
                   "reading it could block or never end: give a file"]


def test_a_tls_failure_during_the_transfer_is_a_download_error(cache, monkeypatch):
    """ssl.SSLError is an OSError (errno 1, EPERM): it must not read as a failed write to the cache."""
    import ssl
    import urllib.request

    from bisenetv2_ros.weights.download import DownloadError, download_weights

    class Response:
        headers = {"Content-Length": "100"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read1(self, size):
            raise ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed")

    monkeypatch.setattr(urllib.request, "urlopen", lambda address, timeout: Response())
    with pytest.raises(DownloadError, match=r"the TLS connection to example.org failed during the download of "
                                            r"https://example.org/w.pth .*the file was discarded"):
        download_weights(NAME, url="https://example.org/w.pth")
    assert not cache.exists() or list(cache.iterdir()) == []
