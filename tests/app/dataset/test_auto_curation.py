"""Curation without a person: the flagged items and the worst-scoring share are rejected, from Python and
from ``diffface curate --auto``."""

import contextlib
import io
import json

import pytest

from diffface.cli.main import main
from diffface.app.dataset.auto_curation import curate_automatically
from diffface.app.dataset.curation import decision_lists
from diffface.data.format import INDEX_NAME, read_index


def _flag(dataset, name: str | None, flag: str = "") -> None:
    """Raise ``flag`` on item ``name`` only (the tiny synthetic items raise several flags of their own)."""
    index = json.loads((dataset / INDEX_NAME).read_text())
    for item in index["items"]:
        item["flags"] = [flag] if item["name"] == name else []
    (dataset / INDEX_NAME).write_text(json.dumps(index))


def test_flagged_and_worst_items_are_rejected(dataset_copy):
    entries = read_index(dataset_copy)
    _flag(dataset_copy, entries[0].name, "landmark_residual")
    unflagged = sorted(entries[1:], key=lambda e: -float(e.quality.get("score", 0.0)))
    figures = curate_automatically(dataset_copy, worst_fraction=1 / len(entries))
    assert set(decision_lists(dataset_copy)["reject"]) == {entries[0].name, unflagged[0].name}
    assert figures["rejected"] == 2 and figures["kept"] == len(entries) - 2
    assert figures["rejected_by_flag"] == {"landmark_residual": 1}
    with pytest.raises(ValueError, match="worst_fraction"):
        curate_automatically(dataset_copy, worst_fraction=1.0)


def test_cli_auto_prints_the_counts(dataset_copy):
    _flag(dataset_copy, None)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["curate", str(dataset_copy), "--auto", "--json"]) == 0
    assert json.loads(printed.getvalue())["rejected"] == 0  # nothing flagged: an empty log
    assert (dataset_copy / "curation.jsonl").read_text() == ""
