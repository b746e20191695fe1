"""Photo sources: every photo in a folder x every configured variant slot.

An item's key is ``STEM.sINDEX-SLOT`` (``astronaut.s1-balanced``); its params hold
the slot's variant type, temperature and seed (see
:func:`tui_app.render.variants.slot_parameters`) and the photo's sha256, so
replacing a photo marks its variants stale.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..settings import show
from ..store.rows import SourceItem
from . import MAX_KEY_CHARS, SourceError, control_name, field_control, make_item


def slot_key(stem: str, index: int, slot: str) -> str:
    """``astronaut.s0-forensic``; a ``preset:NAME`` slot is named by NAME."""
    return f"{stem}.s{index}-{slot.removeprefix('preset:')}"


def check_photo_keys(photo: Path, keys: list[str]) -> None:
    """Refuse a photo whose name cannot make item keys: not UTF-8, a control character (Unicode
    category Cc), ``..`` or a backslash in its stem, or a key (``STEM.sINDEX-SLOT``) longer than
    :data:`~tui_app.sources.MAX_KEY_CHARS` characters or UTF-8 bytes. Other characters (spaces,
    accents) are kept: photos are named by people, and their names are valid where they are.

    Raises:
        SourceError: naming the photo file.
    """
    stem = photo.stem
    try:
        stem.encode("utf-8")
    except UnicodeEncodeError:
        raise SourceError(photo, "the file name is not valid UTF-8: rename the photo") from None
    char = field_control(stem)
    if char is not None:
        raise SourceError(
            photo, f"the file name has a control character {control_name(char)}: rename the photo"
        )
    if ".." in stem or "\\" in stem:
        raise SourceError(photo, f"the name {show(stem)} is not usable in file names ('..' or a backslash)")
    for key in keys:
        size = len(key.encode("utf-8"))
        if size > MAX_KEY_CHARS:
            length = f"{len(key)} characters" if len(key) > MAX_KEY_CHARS else f"{size} bytes in UTF-8"
            raise SourceError(
                photo,
                f"its item key {show(key)} would be {length} long (at most {MAX_KEY_CHARS}): "
                "shorten the file name",
            )


def read_photos(
    folder: Path, params: Mapping[str, Any], presets: Mapping[str, Mapping[str, Any]]
) -> list[SourceItem]:
    """List ``folder``'s photos (by name) x ``params['slots']``.

    Raises:
        SourceError: missing folder, no photos, two photos with one stem, unusable names
            (see :func:`check_photo_keys`).
    """
    from ..render.variants import slot_parameters

    if not folder.is_dir():
        raise SourceError(folder, "photo folder not found")
    exts = set(params.get("extensions", [".png", ".jpg", ".jpeg", ".webp"]))
    photos = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")
    )
    if not photos:
        raise SourceError(folder, f"no photos ({', '.join(sorted(exts))}) in the folder")
    seen: dict[str, str] = {}
    items: list[SourceItem] = []
    slots = list(params.get("slots", ["forensic", "balanced", "creative"]))
    for photo in photos:
        check_photo_keys(photo, [slot_key(photo.stem, index, slot) for index, slot in enumerate(slots)])
        if photo.stem in seen:
            raise SourceError(folder, f"{photo.name} and {seen[photo.stem]} share the name {photo.stem!r}")
        seen[photo.stem] = photo.name
        digest = hashlib.sha256(photo.read_bytes()).hexdigest()
        for index, slot in enumerate(slots):
            slot_params = dict(slot_parameters(slot, index, presets, photo.stem))
            slot_params.update({"photo": photo.name, "photo_sha256": digest, "slot": index})
            items.append(make_item(slot_key(photo.stem, index, slot), len(items), photo.name, slot_params))
    return items
