"""FileStorage: one checksummed file per record, every write atomic and durable.

Layout of the directory::

    <encoded key>.rec      one record envelope (see _records.py); the key is also inside
    =<sha256>.rec          a record whose encoded key would be too long for a filename
    .lock                  flock()ed: exclusive while writing, shared while reading
    .journal               a committed multi-record batch not yet fully applied
    .tmp-<rand>            a write in progress (left behind only by a crash)

Key -> filename is reversible: bytes outside ``[a-z0-9._-]`` (uppercase too,
so case-insensitive filesystems cannot merge two keys) become ``%XX``.

A single-record write is temp file -> write -> fsync -> ``os.replace`` ->
fsync of the directory. A batch (``put_many`` with more than one write or
delete) is atomic through a journal: all envelopes go into one temp file,
which is fsynced and renamed to ``.journal`` and the directory fsynced --
that rename is the commit point. The record files are then written in place
(each fsynced; a torn one is rewritten from the journal) and the journal is
unlinked. Writers hold the exclusive lock from journal to unlink, so any call
that finds a journal under the lock rolls it forward first (re-applying is
idempotent); temp files are discarded on first use. After a crash either the
whole batch is visible or none of it, and readers take the shared lock, so no
reader sees half a batch either.

The journal's unlink (and the new record entries) become durable at the next
write's directory fsync, before which no later write to those keys can be
durable, so a replay never overwrites newer data. This relies on the file
system journaling metadata in order, as ext4, XFS and APFS do.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import secrets
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..errors import CheckpointCorruptError, LeaseError, StorageError
from ._records import DEFAULT_CODEC, RecordCodec
from ._storage import CALLER_WAITS, Record, Storage
from ._worker import Worker

__all__ = ["FileStorage", "key_to_filename", "filename_to_key"]

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_.")
# Each byte's spelling in a filename: one table lookup per byte, not a branch.
_SPELL = tuple(chr(c) if c in _SAFE else f"%{c:02X}" for c in range(256))
_HEX_UPPER = frozenset("0123456789ABCDEF")
_log = logging.getLogger("lion_nb.storage")
_SUFFIX = ".rec"
_MAX_NAME = 200  # well under NAME_MAX (255) with room for the suffix
_JOURNAL = ".journal"  # writers are serialized by the lock, so one journal name suffices
_JOURNAL_CODEC = RecordCodec(1)  # journals are internal; their format never migrates


def key_to_filename(key: str) -> str:
    """The filename that stores ``key`` (``%XX``-escaped, or hashed when too long)."""
    raw = key.encode("utf-8", "surrogatepass")
    name = "".join(map(_SPELL.__getitem__, raw))
    if name.startswith("."):  # leading dots are reserved for internal files
        name = "%2E" + name[1:]
    elif not name:
        name = "%"  # a lone '%' is never an escape, so the empty key stays reversible
    if len(name) > _MAX_NAME:
        name = "=" + hashlib.sha256(raw).hexdigest()
    return name + _SUFFIX


def filename_to_key(name: str) -> str | None:
    """The key of a ``%XX``-escaped filename; None for hashed or internal names."""
    if not name.endswith(_SUFFIX) or name.startswith((".", "=")):
        return None
    stem = name[: -len(_SUFFIX)]
    if stem == "%":
        return ""
    out = bytearray()
    i = 0
    try:
        while i < len(stem):
            if stem[i] == "%":
                hex_pair = stem[i + 1:i + 3]
                if len(hex_pair) != 2 or not _HEX_UPPER.issuperset(hex_pair):
                    return None
                out.append(int(hex_pair, 16))
                i += 3
            else:
                out.append(ord(stem[i]))
                i += 1
        key = out.decode("utf-8", "surrogatepass")
    except (ValueError, UnicodeDecodeError):  # not a name this module wrote
        return None
    # Only the one name key_to_filename gives a key is that key's file.
    return key if key_to_filename(key) == name else None


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


class FileStorage(Storage):
    """Durable storage in a directory, one file per record (see the module docstring)."""

    durable = True

    def __init__(self, directory: str | os.PathLike[str], *,
                 codec: RecordCodec | None = None) -> None:
        self.directory = Path(directory)
        self.codec = codec or DEFAULT_CODEC
        # One I/O thread runs the calls, but close() and tests may come from others,
        # and flock does not exclude threads sharing one descriptor.
        self._mutex = threading.Lock()
        #: Files in the directory that are not records of this storage (skipped by keys()).
        self.foreign_files: set[str] = set()
        self._opened = False  # temp files of crashed writers are dropped on first use
        self._fence_seen: tuple[str, str, bytes] | None = None  # last lease that passed
        self._closed = False
        try:
            # Owner-only (0700 / 0600): records may hold results and grants.
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"checkpoint directory {str(self.directory)!r} is not "
                               f"usable: {exc.strerror or exc}", key=None,
                               path=str(self.directory)) from exc
        self._dir_fd = os.open(self.directory, os.O_RDONLY)
        self._worker = Worker(f"lion-files {self.directory}")
        # A storage dropped without close() (common in notebooks) still frees its
        # descriptors and thread when collected.
        self._finalizer = weakref.finalize(self, self._worker.stop,
                                           functools.partial(_close_fds, self._lock_fd,
                                                             self._dir_fd))

    def __repr__(self) -> str:
        return f"FileStorage({str(self.directory)!r})"

    # --- the async interface: every call runs on the storage's own thread ------

    async def put_many(self, items: Sequence[tuple[str, Record]], *,
                       deletes: Iterable[str] = (),
                       fence: tuple[str, str] | None = None) -> None:
        """Write ``items`` and delete ``deletes`` atomically and durably."""
        # Encode on the caller's side: bad records fail before any I/O.
        puts = {k: self.codec.encode(k, v) for k, v in items}
        dels = [k for k in deletes if k not in puts]
        await self._call(fcntl.LOCK_EX, self._put_many_sync, puts, dels, fence,
                         here=CALLER_WAITS.get())

    async def get(self, key: str) -> Record | None:
        """The record at ``key`` (verified and migrated), or None."""
        raw = await self._call(fcntl.LOCK_SH, self._read, key)
        return None if raw is None else self._decode(raw, key)

    async def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """The records at ``keys`` (None where absent), read in one call to the thread."""
        raws = await self._call(fcntl.LOCK_SH, lambda: [self._read(k) for k in keys])
        return [None if raw is None else self._decode(raw, k) for k, raw in zip(keys, raws)]

    async def keys(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with ``prefix``."""
        return await self._call(fcntl.LOCK_SH, self._keys_sync, prefix)

    async def acquire_lease(self, key: str, owner: str, ttl: float, now: float) -> None:
        """Take (or renew) the lease at ``key``; LeaseError if another live owner has it."""
        await self._call(fcntl.LOCK_EX, self._lease_sync, key, owner, ttl, now)

    async def _call(self, mode: int, fn: Callable[..., Any], *args: Any,
                    here: bool = False) -> Any:
        if self._closed:
            raise StorageError(f"{self!r} is closed", key=None, path=str(self.directory))
        return await self._worker.call(self._locked, mode, fn, *args, here=here)

    async def close(self) -> None:
        """Close the lock and directory descriptors and stop the I/O thread."""
        if not self._closed:
            await self._worker.call(self._close_sync)  # after calls already queued
            self._finalizer()  # closes the descriptors on the thread, then stops it
            self._worker.join()  # the thread is gone when close() returns

    def _close_sync(self) -> None:
        with self._mutex:
            self._closed = True

    # --- locking and recovery ------------------------------------------------

    def _locked(self, mode: int, fn: Callable[..., Any], *args: Any) -> Any:
        with self._mutex:
            if self._closed:
                raise StorageError(f"{self!r} is closed", key=None, path=str(self.directory))
            fcntl.flock(self._lock_fd, mode)
            try:
                # Writers hold the exclusive lock from journal to unlink, so a journal
                # seen under the lock is a failed or crashed writer's: roll it forward.
                if not self._opened or self._exists(_JOURNAL):
                    if mode != fcntl.LOCK_EX:
                        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
                    self._recover()
                    if mode != fcntl.LOCK_EX:
                        fcntl.flock(self._lock_fd, mode)
                return fn(*args)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _recover(self) -> None:
        """Roll forward a complete journal, drop temp files (exclusive lock held)."""
        if not self._opened:
            for name in os.listdir(self.directory):
                if name.startswith(".tmp-"):
                    self._unlink(name)
            self._opened = True
        raw = self._read_name(_JOURNAL, _JOURNAL)
        if raw is None:
            return
        try:
            doc = _JOURNAL_CODEC.decode(raw, _JOURNAL)[1]
        except CheckpointCorruptError as exc:
            raise CheckpointCorruptError(
                f"committed batch journal {str(self.directory / _JOURNAL)!r} is corrupt; move it "
                f"away to open the storage without that batch", key=_JOURNAL) from exc
        self._apply({k: v.encode() for k, v in doc["puts"]}, doc["deletes"])
        self._unlink(_JOURNAL)
        self._fsync_dir()

    # --- synchronous work (worker thread, lock held) -------------------------

    def _put_many_sync(self, puts: dict[str, bytes], dels: list[str],
                       fence: tuple[str, str] | None) -> None:
        if fence is not None:
            self._check_fence(*fence)
        if not puts and not dels:
            return
        if len(puts) + len(dels) == 1:
            if puts:
                (key, raw), = puts.items()
                self._write(key_to_filename(key), raw, key)
            else:
                self._unlink(key_to_filename(dels[0]), key=dels[0])
            self._step("record_replaced")  # in place, not yet durable (the directory)
            self._fsync_dir()
            return
        journal = {"puts": [[k, v.decode()] for k, v in puts.items()], "deletes": dels}
        self._write(_JOURNAL, _JOURNAL_CODEC.encode(_JOURNAL, journal), _JOURNAL)
        self._fsync_dir()  # the commit point
        self._step("journal_committed")
        self._apply(puts, dels)  # if this fails, the next call rolls the journal forward
        self._unlink(_JOURNAL)  # made durable by the next write's directory fsync

    def _apply(self, puts: dict[str, bytes], dels: list[str]) -> None:
        """Apply a committed journal's writes (exclusive lock held, journal on disk)."""
        for key in dels:
            self._unlink(key_to_filename(key), key=key)
        for key, raw in puts.items():
            # In place, no temp file: a torn record is rewritten from the journal, and
            # no reader can look before the journal is gone (the lock).
            self._write(key_to_filename(key), raw, key, in_place=True)
            self._step("record_applied")
        # No directory fsync here: these entries and the journal's unlink reach the
        # disk together at the next directory fsync, so a replay never finds them apart.

    def _check_fence(self, lease_key: str, owner: str) -> None:
        raw = self._read(lease_key)
        # Every commit of an instance checks the same lease, unchanged between renewals:
        # the bytes verified last time need no second checksum and parse.
        if raw is not None and (lease_key, owner, raw) == self._fence_seen:
            return
        lease = None if raw is None else self._decode(raw, lease_key)
        if raw is None or lease is None or lease.get("owner") != owner:
            raise LeaseError(f"lease {lease_key!r} is not held by {owner!r}",
                             key=lease_key, owner=owner)
        self._fence_seen = (lease_key, owner, raw)

    def _lease_sync(self, key: str, owner: str, ttl: float, now: float) -> None:
        raw = self._read(key)
        cur = None if raw is None else self._decode(raw, key)
        if cur is not None and cur.get("owner") != owner and cur.get("expires", 0) > now:
            raise LeaseError(f"{key!r} is leased by {cur['owner']!r}", key=key,
                             owner=cur["owner"])
        self._write(key_to_filename(key),
                    self.codec.encode(key, {"owner": owner, "expires": now + ttl}), key)
        self._fsync_dir()

    def _keys_sync(self, prefix: str) -> list[str]:
        found = []
        for name in os.listdir(self.directory):
            if name.startswith("."):
                continue  # the lock, a journal, temp files
            if name.startswith("=") and name.endswith(_SUFFIX):
                key = self._key_inside(name)
            else:
                key = filename_to_key(name)
                if key is None:
                    self._foreign(name)
            if key is not None and key.startswith(prefix):
                found.append(key)
        return sorted(found)

    def _foreign(self, name: str) -> None:
        """A file this storage did not write: skipped, reported once."""
        if name not in self.foreign_files:
            self.foreign_files.add(name)
            _log.warning("%s: skipping %r, which is not a record file of this storage",
                         self, name)

    def _key_inside(self, name: str) -> str | None:
        raw = self._read_name(name, name)
        try:
            return None if raw is None else RecordCodec.verify(raw, None)["key"]
        except CheckpointCorruptError as exc:
            raise CheckpointCorruptError(f"record file {str(self.directory / name)!r} is "
                                         f"corrupt: {exc}", key=name) from exc

    def _decode(self, raw: bytes, key: str) -> Record:
        try:
            return self.codec.decode(raw, key)[1]
        except CheckpointCorruptError as exc:  # add where it lives, for the user to inspect
            path = self.directory / key_to_filename(key)
            raise CheckpointCorruptError(f"{exc} (file {str(path)!r})", key=key) from None

    # --- file primitives ------------------------------------------------------

    def _read(self, key: str) -> bytes | None:
        return self._read_name(key_to_filename(key), key)

    # Names relative to the directory's descriptor: no path to parse or resolve per call.

    def _read_name(self, name: str, key: str) -> bytes | None:
        try:
            fd = os.open(name, os.O_RDONLY, dir_fd=self._dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._read_error(name, key, exc) from exc
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise self._read_error(name, key, exc) from exc
        finally:
            os.close(fd)

    def _read_error(self, name: str, key: str, exc: OSError) -> StorageError:
        path = str(self.directory / name)
        return StorageError(f"cannot read record {key!r} from {path!r}: {exc}", key=key,
                            path=path)

    def _exists(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def _write(self, name: str, data: bytes, key: str, *, in_place: bool = False) -> None:
        """Durably write a file: via a temp file and rename, or in place under a journal."""
        dfd = self._dir_fd
        tmp = name if in_place else f".tmp-{secrets.token_hex(8)}"
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if in_place else os.O_EXCL)
        try:
            fd = os.open(tmp, flags, 0o600, dir_fd=dfd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            if not in_place:
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            if not in_place:
                try:
                    os.unlink(tmp, dir_fd=dfd)
                except OSError:
                    pass
            raise StorageError(f"cannot write record {key!r} in {str(self.directory)!r}: "
                               f"{exc.strerror or exc}", key=key,
                               path=str(self.directory)) from exc

    def _unlink(self, name: str, *, key: str | None = None) -> None:
        try:
            os.unlink(name, dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {name!r} in {str(self.directory)!r}: {exc}",
                               key=key or name, path=str(self.directory)) from exc

    def _fsync_dir(self) -> None:
        try:
            os.fsync(self._dir_fd)
        except OSError as exc:
            raise StorageError(f"cannot fsync directory {str(self.directory)!r}: {exc}",
                               key=None, path=str(self.directory)) from exc
