"""Downloading the public checkpoints listed in ``known_weights.KNOWN_WEIGHTS`` into the cache.

A file is streamed into a hidden temporary file in the cache folder, its SHA-256 is checked against
the prefix its publisher put in the file name (where one is published), it is test-converted with the
importer and its class count checked (so a file that downloads fine but does not fit the model fails
here, not on the robot), and only then renamed
to its final name, where ``known_weights.open_weights`` finds it by name.

Nothing waits forever: each read waits at most ``timeout`` seconds, and the whole transfer ends
after ``deadline`` seconds (checked between reads, so at most one read timeout later); a malformed
HTTP answer, a connection cut mid-file or a special file behind a ``file://`` URL is one error line.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from ..fileio import file_sha256

BASE_URL_ENV = "BISENETV2_DOWNLOAD_BASE"  # replaces everything before the file name (mirrors, tests)
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30.0     # per read (connect, headers, each chunk)
DEADLINE_S = 1800.0  # the whole transfer: 30 min, a 200 MB file at 110 KB/s


class DownloadError(RuntimeError):
    """A download that failed; the message is one line saying why and what to do."""


def source_url(entry, url: str | None = None) -> str:
    """The URL to fetch: an explicit ``url``, else ``$BISENETV2_DOWNLOAD_BASE/<file name>``, else
    the published URL."""
    if url:
        return url
    base = os.environ.get(BASE_URL_ENV, "").strip()
    if base:
        if urllib.parse.urlsplit(base).scheme not in ("http", "https", "file"):
            raise DownloadError(f"${BASE_URL_ENV}={base!r} is not an http(s):// or file:// URL; fix or unset it")
        return base.rstrip("/") + "/" + entry.file_name
    return entry.url


def download_weights(name: str, url: str | None = None, force: bool = False,
                     progress: Callable[[int, int | None], None] = lambda done, total: None,
                     timeout: float = TIMEOUT_S, deadline: float = DEADLINE_S) -> tuple[Path, bool]:
    """Fetches the known weights ``name`` into the cache; returns (path, downloaded). ``downloaded``
    is False when a verified copy was already there. ``progress(bytes_done, total_or_None)``."""
    from .checkpoint import CheckpointError, read_checkpoint_file
    from .known_weights import KNOWN_WEIGHTS, cache_dir, checkpoint_of_entry, find_known

    entry = find_known(name) if name else None
    if entry is None:
        raise DownloadError(f"unknown weights {name!r}; known: {', '.join(KNOWN_WEIGHTS)} (see `bisenetv2 download --list`)")
    if entry.embedded:
        raise DownloadError(f"weights {name!r} ship inside the package; there is nothing to download")
    folder = cache_dir()
    final = folder / entry.file_name
    if final.is_file() and not force and _matches(file_sha256(final), entry.sha256_prefix):
        return final, False
    address = source_url(entry, url)
    folder.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{entry.file_name}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            digest = _fetch(address, out, progress, timeout, folder, deadline)
            out.flush()
            os.fsync(out.fileno())
        if not _matches(digest, entry.sha256_prefix):
            raise DownloadError(
                f"checksum mismatch for {address}: SHA-256 {digest[:16]}... does not start with "
                f"{entry.sha256_prefix} as published; the file was discarded (a damaged download or a changed file)"
            )
        try:
            checkpoint_of_entry(read_checkpoint_file(tmp), tmp, entry)
        except CheckpointError as error:
            first_line = str(error).splitlines()[0]
            raise DownloadError(f"{address} downloaded but is not a usable {entry.family} checkpoint: "
                                f"{first_line}; the file was discarded") from error
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final, True


def _matches(digest: str, prefix: str | None) -> bool:
    return prefix is None or digest.lower().startswith(prefix.lower())


def _fetch(address: str, out, progress: Callable[[int, int | None], None], timeout: float, folder: Path,
           deadline: float = DEADLINE_S) -> str:
    parts = urllib.parse.urlsplit(address)
    host = parts.netloc or address
    if parts.scheme == "file":  # opening a FIFO would block until a writer comes
        from ..fileio import special_file_problem

        problem = special_file_problem(urllib.request.url2pathname(parts.path), "--url")
        if problem:
            raise DownloadError(problem)
    digest = hashlib.sha256()
    ends = time.monotonic() + deadline
    try:
        with urllib.request.urlopen(address, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            while True:
                if time.monotonic() > ends:
                    raise DownloadError(f"download of {address} took longer than {deadline:g} s ({done} bytes "
                                        f"received); the file was discarded; try again or use a nearer --url")
                # read1: whatever one read brings (at most `timeout` s), so the deadline is checked
                # even when the server drips bytes; read() would wait for the whole chunk
                chunk = response.read1(CHUNK_BYTES) if hasattr(response, "read1") else response.read(CHUNK_BYTES)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                progress(done, total)
            if total is not None and done != total:
                raise DownloadError(f"download of {address} stopped after {done} of {total} bytes; try again")
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{host} answered HTTP {error.code} {error.reason} for {address}") from error
    except http.client.IncompleteRead as error:
        raise DownloadError(f"{host} closed the connection {len(error.partial)} bytes into a chunk of {address}; "
                            "the file was discarded; try again") from error
    except http.client.RemoteDisconnected as error:  # reached, but it hung up before answering
        raise DownloadError(f"{host} closed the connection without an HTTP answer for {address} "
                            f"({_reason(error)}); try again, or use another --url") from error
    except http.client.HTTPException as error:  # BadStatusLine, LineTooLong, ...: not a valid HTTP answer
        raise DownloadError(f"{host} sent a malformed HTTP answer for {address} ({type(error).__name__}: "
                            f"{' '.join(_reason(error).split())[:80]}); try again, or use another --url") from error
    except urllib.error.URLError as error:
        if urllib.parse.urlsplit(address).scheme == "file":  # a local path: the network is not the problem
            raise DownloadError(f"cannot read {address} ({_reason(error.reason)}); check the path given by --url "
                                f"or ${BASE_URL_ENV}") from error
        raise DownloadError(f"cannot reach {host} ({_reason(error.reason)}): are you offline? "
                            f"fetch {address} elsewhere and copy it into {folder}") from error
    except (socket.timeout, TimeoutError, ConnectionError) as error:
        raise DownloadError(f"connection to {host} failed ({_reason(error)}): are you offline?") from error
    except ssl.SSLError as error:  # during the transfer (an OSError whose errno is no file's: not a write failure)
        raise DownloadError(f"the TLS connection to {host} failed during the download of {address} "
                            f"({getattr(error, 'reason', None) or _reason(error)}); the file was discarded; try again") from error
    return digest.hexdigest()


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__
