"""tools/render_readme_image.py writes the README's picture from the renderer layers."""

import runpy
from pathlib import Path

import numpy as np
from PIL import Image

TOOL = Path(__file__).resolve().parents[2] / "tools" / "render_readme_image.py"


def test_writes_six_nonblank_panels(tmp_path):
    main = runpy.run_path(str(TOOL))["main"]
    out = tmp_path / "render.png"
    main(["--out", str(out), "--size", "64"])
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape == (64, 6 * 64, 3)
    for k in range(6):
        panel = image[:, 64 * k:64 * (k + 1)]
        covered = panel.max(-1) > 0
        assert 0.15 < covered.mean() < 0.9, k          # a face, on a black background
    assert not np.array_equal(image[:, :64], image[:, 64:128])  # per-vertex and per-pixel shading differ
