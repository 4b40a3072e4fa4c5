"""The networks shipped with diffface (``networks/pretrained/``), each with a ``.json`` beside it holding the
command that made it (``tools/make_pretrained.sh``) and its held-out figures."""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import read_checkpoint

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def shipped_checkpoints() -> list[Path]:
    """Every shipped checkpoint file (``*.pt``), sorted by name."""
    return sorted(PRETRAINED_DIR.glob("*.pt"))


def find_pretrained(model_fingerprint: str, network: str = "mobileface", width: int = 10,
                    input_size: int = 96) -> Path | None:
    """The shipped checkpoint trained for the morphable model with ``model_fingerprint`` whose network,
    width and input size are these; None when none is."""
    for path in shipped_checkpoints():
        data = read_checkpoint(path)
        config = data["network"]["config"]
        if (data["morphable_model"]["fingerprint"] == model_fingerprint and data["network"]["name"] == network
                and config.get("width") == width and config.get("input_size") == input_size):
            return path
    return None


def provenance(checkpoint: str | Path) -> dict:
    """What ``CHECKPOINT.json`` says of how a shipped checkpoint was made (empty when there is no such file)."""
    path = Path(checkpoint).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else {}
