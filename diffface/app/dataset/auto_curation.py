"""Curation without a person: reject the items whose automatic quality flags are raised (and, optionally, the
worst-scoring share of the rest), as decisions in the dataset's ``curation.jsonl`` like the browser's."""

from __future__ import annotations

from pathlib import Path

from diffface.data.format import CURATION_NAME, append_decision, read_index


def curate_automatically(dataset: str | Path, worst_fraction: float = 0.0) -> dict:
    """Reject (in ``curation.jsonl``) every item whose automatic quality flags are raised, and the
    ``worst_fraction`` of all items taken from the unflagged ones with the highest quality score.

    Returns:
        ``kept``, ``rejected`` counts, ``rejected_by_flag`` (flag -> count), ``train_kept``, ``val_kept``.

    Raises:
        ValueError: when ``worst_fraction`` is outside [0, 1) or no two training items would be left.
    """
    if not 0 <= worst_fraction < 1:
        raise ValueError(f"worst_fraction must be in [0, 1), got {worst_fraction}")
    entries = read_index(dataset)
    flagged = [e for e in entries if e.flags]
    rest = sorted((e for e in entries if not e.flags), key=lambda e: -float(e.quality.get("score", 0.0)))
    worst = rest[:int(worst_fraction * len(entries))]
    rejected = {e.name for e in flagged + worst}
    kept = [e for e in entries if e.name not in rejected]
    if sum(e.split == "train" for e in kept) < 2:
        raise ValueError(f"{dataset}: fewer than 2 training items are left unflagged; nothing to train on "
                         f"({len(flagged)} of {len(entries)} items flagged)")
    (Path(dataset) / CURATION_NAME).touch()  # an empty log: nothing rejected
    for entry in flagged + worst:
        append_decision(dataset, entry.name, "reject")
    by_flag: dict[str, int] = {}
    for entry in flagged:
        for flag in entry.flags:
            by_flag[flag] = by_flag.get(flag, 0) + 1
    return {"kept": len(kept), "rejected": len(rejected), "rejected_by_flag": by_flag,
            "train_kept": sum(e.split == "train" for e in kept), "val_kept": sum(e.split == "val" for e in kept)}
