"""Printing figures: a JSON object with ``--json``, else an aligned two-column table."""

from __future__ import annotations

import json


def print_figures(figures: dict, as_json: bool, title: str | None = None) -> None:
    if as_json:
        print(json.dumps(figures, indent=None, sort_keys=False, default=str))
        return
    if title:
        print(title)
    width = max((len(str(k)) for k in figures), default=0)
    for key, value in figures.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        print(f"  {str(key):<{width}}  {value}")
