"""The demo's input when a user brings photos: split into a training and a held-out set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from diffface.landmarks import list_images


def split_user_images(folder: Path, out: Path, heldout: int) -> dict:
    """Hard-link the last ``heldout`` photos (sorted) and their annotations into ``out/heldout``, the rest
    into ``out/train`` (copies across file systems). Not symbolic links: the fit job resolves those and
    would file the results under the photos' real folder."""
    images = list_images(folder) if folder.is_dir() else []
    if len(images) < heldout + 2:
        raise FileNotFoundError(f"{folder}: need at least {heldout + 2} photos (2 to train on, {heldout} held out), "
                                f"found {len(images)}")
    parts = {"train": images[:-heldout], "heldout": images[-heldout:]}
    for name, paths in parts.items():
        target = out / name / "images"
        target.mkdir(parents=True, exist_ok=True)
        for image in paths:
            for source in [image, *(image.with_suffix(s) for s in (".pts", ".json", ".npy"))]:
                if source.is_file() and not (target / source.name).exists():
                    try:
                        os.link(source, target / source.name)
                    except OSError:
                        shutil.copy2(source, target / source.name)
    return {name: {"faces": len(paths)} for name, paths in parts.items()}
