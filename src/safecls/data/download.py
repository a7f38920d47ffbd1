"""Cached, checksum-verified downloads of benchmark files from their canonical public locations.

Files land in the cache directory (`cache_dir` argument, else `$SAFECLS_CACHE`, else `~/.cache/safecls/data`),
one sub-folder per benchmark. `SAFECLS_CACHE` only moves the cache; it never changes what is loaded, because every
file whose sha256 is known is verified on download and again on each cache hit.

Any URL scheme urllib knows works (https, http, file), which is how tests exercise this path without the network.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from safecls.errors import DataError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16


def default_cache_dir() -> Path:
    """`$SAFECLS_CACHE` if set, else `~/.cache/safecls/data` (documented in the README's environment table)."""
    env = os.environ.get("SAFECLS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "safecls" / "data"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_cached(url: str, dest: Path, sha256: str | None = None, *, timeout: float = 60.0) -> Path:
    """Return `dest`, downloading `url` into it first when it is absent (or its checksum is wrong).

    A partial download never sits at `dest`: bytes go to a hidden temp file that is renamed only after the
    checksum matches. A known checksum that does not match raises DataError (the upstream file changed, or
    something in between altered it); with `sha256=None` the file is accepted and its digest logged.
    """
    if dest.is_file():
        if sha256 is None or sha256_of(dest) == sha256:
            return dest
        logger.warning("%s: cached copy fails its sha256 check; downloading it again from %s", dest, url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, tmp.open("wb") as out:  # noqa: S310 (fixed table)
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise DataError(
            url, f"download failed ({e})", fix=f"check the network, or download it by hand and pass its local path ({dest})"
        ) from e
    digest = h.hexdigest()
    if sha256 is not None and digest != sha256:
        tmp.unlink(missing_ok=True)
        raise DataError(
            url,
            f"sha256 mismatch: expected {sha256}, got {digest}",
            fix="the upstream file changed or the download was altered; pass a verified local copy instead",
        )
    if sha256 is None:
        logger.info("%s: no known sha256; downloaded file has sha256 %s", url, digest)
    os.replace(tmp, dest)
    return dest
