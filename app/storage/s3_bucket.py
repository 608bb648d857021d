"""One S3-compatible bucket, through obstore: the object names Callscribe uses and the few calls it makes.

Key layout (``<p>`` is S3_PREFIX, `responses/` by default; one bucket)::

    <p>call_<sid>_conversation.<ext>, call_<sid>.txt, …      the outputs, the names of responses/
    <p>.calls/<sid>/seg/e<epoch:03d>/<start:010d>.wav        10 s of settled audio, stereo PCM16 (L caller, R other)
    <p>.calls/<sid>/seg/e<epoch:03d>/<start:010d>.jsonl      the journal lines appended since the previous segment
    <p>.calls/<sid>/out/<attempt>/<name>                     outputs staged by one finalisation attempt
    <p>.calls/<sid>/final.json                               THE COMMIT, created once (If-None-Match: *)

Why obstore: its Rust client costs about 0.2-0.3 ms of CPU per small PUT, a tenth of boto3's
(docs/ scale-out research, measured again by tests/s3). Its sync calls release the GIL and block
only the calling thread: every call here is made from a worker thread, never the event loop.
Timeouts are short so that an unreachable S3 surfaces as `S3Unavailable` within seconds and the
caller's own retry (with backoff, state on local disk) takes over, rather than obstore's
three-minute retry loop. Knows no call, no recording and no web framework.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, NotFoundError, PreconditionError
from obstore.store import S3Store

from app.storage.paths import validate_sid

__all__ = ["S3Config", "Bucket", "ObjectInfo", "S3Unavailable", "AlreadyCommitted", "PART_BYTES"]

log = logging.getLogger("callscribe.s3")

PART_BYTES = 8 * 1024 * 1024  # one fixed multipart part size (R2 wants all parts but the last equal)
_SEG_RE = re.compile(r"seg/e(\d{3,})/(\d{10})\.(wav|jsonl)$")


class S3Unavailable(OSError):
    """S3 did not answer, or answered with an error that retrying may cure (5xx, a timeout, a refused connection)."""


class AlreadyCommitted(Exception):
    """A conditional write found the object there (412): another writer came first."""


@dataclass(frozen=True)
class S3Config:
    """Where the bucket is. `prefix` is normalised to '' or a string ending in '/'."""

    bucket: str
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str = "us-east-1"
    prefix: str = "responses/"
    request_timeout_s: float = 30.0  # one request, start to end (a multipart part is one request)
    connect_timeout_s: float = 3.0

    def __post_init__(self) -> None:
        p = self.prefix.strip("/")
        object.__setattr__(self, "prefix", f"{p}/" if p else "")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # epoch seconds
    e_tag: str | None = None


def _info(meta: dict[str, Any]) -> ObjectInfo:
    modified = meta.get("last_modified")
    return ObjectInfo(meta["path"], int(meta["size"]),
                      modified.timestamp() if isinstance(modified, datetime) else 0.0, meta.get("e_tag"))


def _unavailable(exc: BaseException, what: str) -> S3Unavailable:
    first = str(exc).split("\n", 1)[0][:300]
    return S3Unavailable(f"S3 {what} failed: {type(exc).__name__}: {first}")


class Bucket:
    """The bucket with Callscribe's names. Every method blocks: call it from a worker thread."""

    def __init__(self, cfg: S3Config) -> None:
        self.cfg = cfg
        self.prefix = cfg.prefix
        common: dict[str, Any] = {"region": cfg.region, "virtual_hosted_style_request": False}
        if cfg.endpoint_url:
            common["endpoint"] = cfg.endpoint_url.rstrip("/")
        if cfg.access_key_id:
            common["access_key_id"] = cfg.access_key_id
            common["secret_access_key"] = cfg.secret_access_key or ""
        http = bool(cfg.endpoint_url and cfg.endpoint_url.startswith("http://"))
        retry = {"max_retries": 2, "retry_timeout": timedelta(seconds=cfg.request_timeout_s),
                 "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2)}}
        timeouts = {"connect_timeout": timedelta(seconds=cfg.connect_timeout_s), "allow_http": http}
        # Writes and small reads: a whole request must end within the timeout.
        self._store = S3Store(cfg.bucket, **common, retry_config=retry,  # type: ignore[arg-type]
                              client_options={**timeouts, "timeout": timedelta(seconds=cfg.request_timeout_s)})
        # Downloads stream at the pace of the HTTP client that reads them: no overall limit, only a stalled read.
        self._reader = S3Store(cfg.bucket, **common, retry_config=retry,  # type: ignore[arg-type]
                               client_options={**timeouts, "timeout": timedelta(days=1),
                                               "read_timeout": timedelta(seconds=cfg.request_timeout_s)})

    # ------------------------------------------------------------------ names
    def output_key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def call_prefix(self, sid: str) -> str:
        return f"{self.prefix}.calls/{validate_sid(sid)}/"

    def segments_prefix(self, sid: str) -> str:
        return self.call_prefix(sid) + "seg/"

    def segment_key(self, sid: str, epoch: int, start: int, ext: str) -> str:
        return f"{self.segments_prefix(sid)}e{epoch:03d}/{start:010d}.{ext}"

    def final_key(self, sid: str) -> str:
        return self.call_prefix(sid) + "final.json"

    def staged_key(self, sid: str, attempt: str, name: str) -> str:
        return f"{self.call_prefix(sid)}out/{attempt}/{name}"

    @staticmethod
    def parse_segment(key: str) -> tuple[int, int, str] | None:
        """(epoch, start, 'wav' or 'jsonl') of a segment key, or None."""
        m = _SEG_RE.search(key)
        return (int(m.group(1)), int(m.group(2)), m.group(3)) if m else None

    # ------------------------------------------------------------------ objects
    def put(self, key: str, data: bytes | memoryview) -> None:
        try:
            obstore.put(self._store, key, data, use_multipart=False)
        except BaseError as exc:
            raise _unavailable(exc, f"PUT {key}") from None

    def put_file(self, key: str, path: Path) -> int:
        """Upload a local file (multipart in fixed 8 MiB parts above that size); its size."""
        size = path.stat().st_size
        try:
            with open(path, "rb") as f:
                obstore.put(self._store, key, f, use_multipart=size > PART_BYTES, chunk_size=PART_BYTES,
                            max_concurrency=4)
        except BaseError as exc:
            raise _unavailable(exc, f"PUT {key}") from None
        return size

    def create(self, key: str, data: bytes) -> str | None:
        """Create `key` only if it does not exist (If-None-Match: *); its ETag. Raises AlreadyCommitted."""
        try:
            return obstore.put(self._store, key, data, mode="create")["e_tag"]
        except AlreadyExistsError:
            raise AlreadyCommitted(key) from None
        except BaseError as exc:
            raise _unavailable(exc, f"PUT {key}") from None

    def replace(self, key: str, data: bytes, e_tag: str) -> str | None:
        """Overwrite `key` only if it is still the version `e_tag` (If-Match). Raises AlreadyCommitted."""
        try:
            return obstore.put(self._store, key, data, mode={"e_tag": e_tag})["e_tag"]
        except (PreconditionError, AlreadyExistsError):
            raise AlreadyCommitted(key) from None
        except BaseError as exc:
            raise _unavailable(exc, f"PUT {key}") from None

    def get(self, key: str) -> tuple[bytes, str | None] | None:
        """A small object's bytes and ETag, or None when there is none."""
        try:
            res = obstore.get(self._store, key)
            return bytes(res.bytes()), res.meta.get("e_tag")
        except (FileNotFoundError, NotFoundError):
            return None
        except BaseError as exc:
            raise _unavailable(exc, f"GET {key}") from None

    def head(self, key: str) -> ObjectInfo | None:
        try:
            return _info(obstore.head(self._store, key))  # type: ignore[arg-type]
        except (FileNotFoundError, NotFoundError):
            return None
        except BaseError as exc:
            raise _unavailable(exc, f"HEAD {key}") from None

    def stream(self, key: str, chunk: int = 64 * 1024) -> Iterator[bytes] | None:
        """The object's body as it arrives, or None when there is none."""
        try:
            res = obstore.get(self._reader, key)
        except (FileNotFoundError, NotFoundError):
            return None
        except BaseError as exc:
            raise _unavailable(exc, f"GET {key}") from None
        return (bytes(b) for b in res.stream(min_chunk_size=chunk))

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Objects whose key starts with ``prefix``: a folder (``a/b/``) or the start of a name
        (``a/call_X``). obstore lists whole folders only, so the start of a name is listed from its
        folder, after the prefix (S3's start-after), keeping the keys that begin with it."""
        if not prefix or prefix.endswith("/"):
            try:
                return [_info(m) for page in obstore.list(self._store, prefix or None) for m in page]  # type: ignore[arg-type]
            except BaseError as exc:
                raise _unavailable(exc, f"LIST {prefix}") from None
        out: list[ObjectInfo] = []
        for info in self.list_after(prefix.rpartition("/")[0], prefix):
            if not info.key.startswith(prefix):
                break  # keys come in order: past the prefix, nothing more begins with it
            out.append(info)
        return out

    def list_after(self, folder: str, offset: str) -> Iterator[ObjectInfo]:
        """Every object in ``folder`` (a key prefix without its trailing slash; "" = the bucket) whose
        key sorts after ``offset``, in key order, a page at a time."""
        try:
            for page in obstore.list(self._store, folder or None, offset=offset, chunk_size=1000):
                for m in page:
                    yield _info(m)  # type: ignore[arg-type]
        except BaseError as exc:
            raise _unavailable(exc, f"LIST {folder} after {offset}") from None

    def copy(self, src: str, dst: str) -> None:
        """Server-side copy (CopyObject): no bytes pass through this host."""
        try:
            obstore.copy(self._store, src, dst)
        except BaseError as exc:
            raise _unavailable(exc, f"COPY {src}") from None

    def delete(self, keys: list[str]) -> None:
        """Delete objects; missing ones are no error."""
        for i in range(0, len(keys), 1000):
            try:
                obstore.delete(self._store, keys[i:i + 1000])
            except (FileNotFoundError, NotFoundError):
                pass
            except BaseError as exc:
                raise _unavailable(exc, f"DELETE {keys[i]}") from None
