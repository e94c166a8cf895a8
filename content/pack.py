"""Content packs: one uncompressed POSIX tar holding `manifest.json` first, then `museum.json`, then `media/…`.

The manifest lists pack_id, pack_version, languages, created_at and, for every other member, its path, size and
SHA-256. Reading trusts nothing in the archive: every member must be a regular file the manifest lists, once,
with its declared size and hash, and the declared sizes are bounded before anything is read, so a crafted archive
cannot make a reader write outside its folder or fill a disk. Media are already compressed, so the tar is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from content.media import HEAD_BYTES, MAX_FILE_BYTES, MAX_FILES, MAX_MUSEUM_JSON_BYTES, MAX_PACK_BYTES, kind_problem
from content.model import Museum, decode_json, parse_museum
from content.source import MUSEUM_FILE, ContentError, validate_source

MANIFEST_FILE = "manifest.json"
PACK_FORMAT = 1
MAX_MANIFEST_BYTES = 1024 * 1024
_CHUNK = 1024 * 1024
_MANIFEST_KEYS = ("format", "pack_id", "pack_version", "languages", "created_at", "files")


@dataclass(frozen=True)
class PackFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Pack:
    museum: Museum
    created_at: str
    files: tuple[PackFile, ...]

    @property
    def pack_id(self) -> str:
        return self.museum.pack_id

    @property
    def pack_version(self) -> int:
        return self.museum.pack_version

    @property
    def total_bytes(self) -> int:
        return sum(file.size for file in self.files)


# --- building ---------------------------------------------------------------------------------------------

def build_pack(source_dir: str | Path, out_path: str | Path, *, now: datetime | None = None) -> Pack:
    """Validate a content folder and write its pack to out_path atomically (whole or not at all)."""
    source = validate_source(source_dir)
    files = tuple(PackFile(file.path, file.size, file_sha256(source.root / file.path)) for file in source.files)
    created_at = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    pack = Pack(source.museum, created_at, files)
    manifest = json.dumps(manifest_dict(pack), indent=1, ensure_ascii=False).encode("utf-8")

    out_path = Path(out_path)
    handle, temp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".partial", dir=out_path.parent)
    try:
        with os.fdopen(handle, "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, MANIFEST_FILE, manifest)
            for file in files:
                with open(source.root / file.path, "rb") as data:
                    info = _member(file.path, file.size)
                    hashing = _HashingReader(data)
                    tar.addfile(info, hashing)
                    if hashing.hexdigest() != file.sha256:
                        raise ContentError([f"{file.path}: changed while the pack was being built; build again"])
            tar.close()
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, out_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    return pack


def manifest_dict(pack: Pack) -> dict[str, Any]:
    return {"format": PACK_FORMAT, "pack_id": pack.pack_id, "pack_version": pack.pack_version,
            "languages": list(pack.museum.languages), "created_at": pack.created_at,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in pack.files]}


def _member(path: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info


def _add_bytes(tar: tarfile.TarFile, path: str, data: bytes) -> None:
    tar.addfile(_member(path, len(data)), io.BytesIO(data))


class _HashingReader:
    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._hash.update(data)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in chunks (a pack may be hundreds of megabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- reading ----------------------------------------------------------------------------------------------

def parse_manifest(raw: bytes) -> tuple[dict[str, Any], dict[str, PackFile]]:
    """Check a manifest's shape and bounds (pure); returns it and its files by path. ContentError if wrong."""
    try:
        data = decode_json(raw)
    except ValueError as error:
        raise ContentError([f"{MANIFEST_FILE}: {error}"]) from None
    if not isinstance(data, dict) or sorted(data) != sorted(_MANIFEST_KEYS):
        raise ContentError([f"{MANIFEST_FILE}: must be an object with exactly {', '.join(_MANIFEST_KEYS)}"])
    if data["format"] != PACK_FORMAT:
        raise ContentError([f"{MANIFEST_FILE}: format {data['format']!r}, this reader knows {PACK_FORMAT}"])
    entries = data["files"]
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_FILES:
        raise ContentError([f"{MANIFEST_FILE}: files must list 1 to {MAX_FILES} files"])
    files: dict[str, PackFile] = {}
    total = 0
    for index, entry in enumerate(entries):
        where = f"{MANIFEST_FILE}: files[{index}]"
        if not isinstance(entry, dict) or sorted(entry) != ["path", "sha256", "size"]:
            raise ContentError([f"{where} must be an object with path, size and sha256"])
        path, size, sha = entry["path"], entry["size"], entry["sha256"]
        if not isinstance(path, str) or path in files or not _safe_member_name(path) or path == MANIFEST_FILE:
            raise ContentError([f"{where}: path {path!r} is unsafe or listed twice"])
        limit = MAX_MUSEUM_JSON_BYTES if path == MUSEUM_FILE else MAX_FILE_BYTES
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= limit:
            raise ContentError([f"{where} ({path}): size must be from 1 to {limit} bytes, got {size!r}"])
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ContentError([f"{where} ({path}): sha256 must be 64 lowercase hex digits"])
        total += size
        files[path] = PackFile(path, size, sha)
    if total > MAX_PACK_BYTES:
        raise ContentError([f"{MANIFEST_FILE}: declares {total} bytes, at most {MAX_PACK_BYTES} in one pack"])
    if MUSEUM_FILE not in files:
        raise ContentError([f"{MANIFEST_FILE}: does not list {MUSEUM_FILE}"])
    return data, files


def _safe_member_name(name: str) -> bool:
    parts = name.split("/")
    return (bool(name) and not name.startswith("/") and "\\" not in name and ":" not in name
            and all(part not in ("", ".", "..") for part in parts) and all(ord(c) >= 32 for c in name))


def verify_pack(path: str | Path) -> Pack:
    """Read and check a whole pack without writing anything; ContentError says why it is refused."""
    return _read_pack(Path(path), None)


def unpack_pack(path: str | Path, into_dir: str | Path) -> Pack:
    """Verify a pack while writing its files into a new folder `into_dir`, which appears only once every file
    has checked out (it is built beside it under a temporary name and renamed)."""
    into_dir = Path(into_dir)
    if into_dir.exists():
        raise ContentError([f"{into_dir}: already exists; unpack into a new folder"])
    staging = Path(tempfile.mkdtemp(prefix=f".{into_dir.name}.", suffix=".partial", dir=into_dir.parent))
    try:
        pack = _read_pack(Path(path), staging)
        os.rename(staging, into_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return pack


def _read_pack(path: Path, into: Path | None) -> Pack:
    try:
        archive_size = path.stat().st_size
        tar = tarfile.open(path, mode="r:")  # noqa: SIM115  # closed by the with below
    except (OSError, tarfile.TarError) as error:
        raise ContentError([f"{path}: not a readable pack: {error}"]) from None
    with tar:
        try:
            return _read_members(tar, path, archive_size, into)
        except (OSError, tarfile.TarError, EOFError) as error:
            raise ContentError([f"{path}: damaged or truncated archive: {error}"]) from None


def _read_members(tar: tarfile.TarFile, path: Path, archive_size: int, into: Path | None) -> Pack:
    refuse: Callable[[str], ContentError] = lambda why: ContentError([f"{path}: {why}"])  # noqa: E731
    if archive_size > MAX_PACK_BYTES + MAX_MANIFEST_BYTES + 1024 * (MAX_FILES + 2) * 4:
        raise refuse(f"{archive_size} bytes, larger than any valid pack")
    first = tar.next()
    if first is None or first.name != MANIFEST_FILE or not first.isreg() or not 0 < first.size <= MAX_MANIFEST_BYTES:
        raise refuse(f"the first member must be {MANIFEST_FILE}, a file of at most {MAX_MANIFEST_BYTES} bytes")
    manifest, expected = parse_manifest(_read_all(tar, first))
    seen: dict[str, bytes] = {}
    museum_raw = b""
    while (member := tar.next()) is not None:
        name = member.name
        if not _safe_member_name(name):
            raise refuse(f"member {name!r}: unsafe path (absolute, '..' or odd characters)")
        if not member.isreg():
            raise refuse(f"member {name!r}: not a regular file (links and devices are refused)")
        if name in seen or name == MANIFEST_FILE:
            raise refuse(f"member {name!r}: appears twice")
        if name not in expected:
            raise refuse(f"member {name!r}: not listed in {MANIFEST_FILE}")
        declared = expected[name]
        if member.size != declared.size:
            raise refuse(f"member {name!r}: {member.size} bytes, the manifest says {declared.size}")
        head, digest = _copy_member(tar, member, into, keep=name == MUSEUM_FILE)
        if digest != declared.sha256:
            raise refuse(f"member {name!r}: SHA-256 does not match the manifest (corrupted or altered)")
        seen[name] = head[:HEAD_BYTES]
        if name == MUSEUM_FILE:
            museum_raw = head
    missing = sorted(set(expected) - set(seen))
    if missing:
        raise refuse(f"missing from the archive: {', '.join(missing)}")

    try:
        museum = parse_museum(decode_json(museum_raw))
    except ValueError as error:
        raise refuse(f"{MUSEUM_FILE}: {error}") from None
    mismatched = [key for key, value in (("pack_id", museum.pack_id), ("pack_version", museum.pack_version),
                                         ("languages", list(museum.languages))) if manifest[key] != value]
    if mismatched:
        raise refuse(f"{MANIFEST_FILE} and {MUSEUM_FILE} disagree on {', '.join(mismatched)}")
    errors: list[str] = []
    used: set[str] = {MUSEUM_FILE}
    for index, artwork in enumerate(museum.artworks):
        for place, kind, media_path in artwork.media.files():
            used.add(media_path)
            problem = ("not in the pack" if media_path not in seen
                       else kind_problem(kind, media_path, seen[media_path][:HEAD_BYTES]))
            if problem is not None:
                errors.append(f"{path}: artworks[{index}] ({artwork.artwork_id}): media.{place}: {problem}")
    errors.extend(f"{path}: {name}: in the pack but named by no artwork" for name in sorted(set(seen) - used))
    if errors:
        raise ContentError(errors)
    return Pack(museum, str(manifest["created_at"]), tuple(expected[name] for name in expected))


def _read_all(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    assert handle is not None  # a regular file always has content
    data = handle.read()
    if len(data) != member.size:
        raise EOFError(f"{member.name} is cut short")
    return data


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, into: Path | None,
                 keep: bool = False) -> tuple[bytes, str]:
    """Stream one member, hashing it (and writing it under `into`); returns its first bytes (all of them if
    `keep`: museum.json, whose size the manifest bounds) and its SHA-256."""
    handle = tar.extractfile(member)
    assert handle is not None
    digest = hashlib.sha256()
    head = b""
    remaining = member.size
    out: IO[bytes] | None = None
    if into is not None:
        target = into / member.name
        target.parent.mkdir(parents=True, exist_ok=True)
        out = open(target, "xb")  # noqa: SIM115  # closed below; "x": never through an existing file
    try:
        while remaining > 0:
            chunk = handle.read(min(_CHUNK, remaining))
            if not chunk:
                raise EOFError(f"{member.name} is cut short")
            if keep:
                head += chunk
            elif len(head) < HEAD_BYTES:
                head += chunk[:HEAD_BYTES - len(head)]
            digest.update(chunk)
            remaining -= len(chunk)
            if out is not None:
                out.write(chunk)
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
    finally:
        if out is not None:
            out.close()
    return head, digest.hexdigest()

