"""A content source folder: `museum.json` and the media it names under `media/`. Validation reports every
problem, each naming its exact place (`artworks[3] (vermeer-milkmaid): media.audio.en: file not found`)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from content.media import (
    HEAD_BYTES,
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_MUSEUM_JSON_BYTES,
    MAX_PACK_BYTES,
    extension_problem,
    kind_problem,
)
from content.model import Museum, decode_json, parse_museum

MUSEUM_FILE = "museum.json"


class ContentError(ValueError):
    """Invalid content; `errors` holds one line per problem, each starting with its place."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = tuple(errors)


@dataclass(frozen=True)
class SourceFile:
    path: str
    """Relative, '/'-separated: the same in the folder and in the pack."""
    size: int


@dataclass(frozen=True)
class Source:
    root: Path
    museum: Museum
    files: tuple[SourceFile, ...]
    """museum.json first, then each media file once, in the order museum.json names them."""

    @property
    def total_bytes(self) -> int:
        return sum(file.size for file in self.files)


def validate_source(root: str | Path) -> Source:
    """Check a content folder; ContentError lists every problem found."""
    root = Path(root)
    if not root.is_dir():
        raise ContentError(["not a folder (give the folder that holds museum.json)"])
    museum_path = root / MUSEUM_FILE
    museum_problem = _file_problem(root, MUSEUM_FILE, MAX_MUSEUM_JSON_BYTES)
    if museum_problem is not None:
        raise ContentError([f"{MUSEUM_FILE}: {museum_problem}"])
    try:
        museum = parse_museum(decode_json(museum_path.read_bytes()))
    except ValueError as error:
        raise ContentError([f"{MUSEUM_FILE}: {error}"]) from None

    errors: list[str] = []
    files = [SourceFile(MUSEUM_FILE, museum_path.stat().st_size)]
    seen: dict[str, str] = {}
    for index, artwork in enumerate(museum.artworks):
        for place, kind, path in artwork.media.files():
            where = f"artworks[{index}] ({artwork.artwork_id}): media.{place}"
            problem = extension_problem(kind, path) or _file_problem(root, path, MAX_FILE_BYTES)
            if problem is None:
                with open(root / path, "rb") as handle:
                    problem = kind_problem(kind, path, handle.read(HEAD_BYTES))
            if problem is not None:
                errors.append(f"{where}: {problem}")
            elif path in seen:
                if seen[path] != kind:
                    errors.append(f"{where}: {path} is already used as {seen[path]}")
            else:
                seen[path] = kind
                files.append(SourceFile(path, (root / path).stat().st_size))
    if len(files) > MAX_FILES:
        errors.append(f"media: {len(files)} files, at most {MAX_FILES} in one pack")
    total = sum(file.size for file in files)
    if total > MAX_PACK_BYTES:
        errors.append(f"media: {total} bytes in all, at most {MAX_PACK_BYTES} in one pack")
    if errors:
        raise ContentError(errors)
    return Source(root, museum, tuple(files))


def _file_problem(root: Path, relative: str, max_bytes: int) -> str | None:
    """Why `relative` is not a readable regular file inside `root` of at most max_bytes, or None."""
    path = root / relative
    try:
        info = path.lstat()
    except FileNotFoundError:
        return "file not found"
    except OSError as error:
        return f"cannot read: {error.strerror or error}"
    # A symbolic link (or a folder symlinked on the way) could put a file from outside the folder in the pack.
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        return f"{relative} leads outside the content folder (symbolic link)"
    if stat.S_ISLNK(info.st_mode):
        return f"{relative} is a symbolic link: put the file itself in the folder"
    if not stat.S_ISREG(info.st_mode):
        return f"{relative} is not a regular file"
    if info.st_size > max_bytes:
        return f"{relative} is {info.st_size} bytes, at most {max_bytes} allowed"
    if info.st_size == 0:
        return f"{relative} is empty"
    return None
