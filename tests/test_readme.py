"""The Python examples of the README and of the pages under docs/ run as written, and give what their text and
comments say (the docs stay true).

Each example is recognised by a line it contains and has a check of its results below; an example
without one fails, so a new example comes with its check.
"""

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [(page.relative_to(ROOT).as_posix(), k, block) for page in PAGES
          for k, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))]


def check_model_camera_lighting(ns: dict, printed: str) -> None:
    """README: model, projection and SH shading of two neutral faces 1.1 m in front of the camera."""
    vertices_count = ns["model"].num_vertices
    assert ns["vertices"].shape == ns["albedo"].shape == (2, vertices_count, 3)  # "(2, V, 3) each"
    assert ns["uv"].shape == (2, vertices_count, 2) and ns["rgb"].shape == (2, vertices_count, 3)
    depth = ns["depth"]
    assert 950 < float(depth.min()) and float(depth.max()) < 1110  # the face (+z toward the camera) at 1100 mm
    # a frontal face centred on the principal point: the projected centroid is near (112, 112)
    assert torch.allclose(ns["uv"].mean(1), torch.full((2, 2), 112.0), atol=15)
    assert torch.isfinite(ns["rgb"]).all() and float(ns["rgb"].std()) > 0  # shaded, not constant


def check_renderer(ns: dict, printed: str) -> None:
    """README: four yaws rendered with SH lighting, and their normals."""
    out = ns["out"]
    assert out.images.shape == (4, 224, 224, 3) and out.fragments.mask.shape == (4, 224, 224)
    coverage = out.fragments.mask.float().mean((1, 2))
    assert bool((coverage > 0.05).all()) and bool((coverage < 0.9).all())  # a face in every image, not the frame
    assert float((out.images[0] - out.images[3]).abs().max()) > 0.1  # yaw -0.6 and +0.6 rad differ
    assert ns["normals"].shape == (4, 224, 224, 3)
    inside = out.fragments.mask[0]
    lengths = ns["normals"][0][inside].norm(dim=-1)
    assert torch.allclose(lengths, torch.ones_like(lengths), atol=1e-3)  # unit normals on the face


def check_face_cropper(ns: dict, printed: str) -> None:
    """README: crops around landmarks; points and the camera carried into the crop."""
    assert ns["crops"].shape == (2, 3, 96, 96) and ns["landmarks_96"].shape == (2, 68, 2)
    points = ns["landmarks_96"]
    assert float(points.min()) >= 0 and float(points.max()) <= 96  # the landmarks lie inside their crop
    # "the same points in the crop": projecting with the crop's camera lands where the transform maps them
    rays = torch.rand(2, 5, 2) - 0.5  # X/Z, Y/Z
    in_photo = 500.0 * rays + torch.tensor([160.0, 120.0])
    in_crop = ns["focal_96"][:, None] * rays + ns["centre_96"][:, None]
    torch.testing.assert_close(ns["transform"].apply_points(in_photo), in_crop)


def check_dataset(ns: dict, printed: str) -> None:
    """docs/dataset.md: a dataset built from 4 synthetic faces, one rejected, streamed and augmented."""
    assert ns["summary"] is not None
    names = [ns["train"][i]["name"] for i in range(len(ns["train"]))]
    assert len(names) >= 1 and "face_0000" not in names
    batch, crops = ns["batch"], ns["crops"]
    assert crops.shape == batch["image"].shape and crops.shape[1:] == (3, 96, 96)
    assert float(crops.min()) >= 0 and float(crops.max()) <= 1
    assert not torch.equal(crops, batch["image"])  # the augmentation changed the pixels


def check_network(ns: dict, printed: str) -> None:
    """docs/network.md: the printed parameter count and feature shape are the ones its comment gives."""
    assert printed.strip() == "365538 torch.Size([1, 320, 2, 2])"


# a line that identifies the example -> its check
CHECKS = {
    "rgb = sh_shading(albedo": check_model_camera_lighting,
    "renderer = MeshRenderer(MeshRasterizer": check_renderer,
    "crops, transform = FaceCropper(size=96)": check_face_cropper,
    "augment = Augmenter(AugmentConfig": check_dataset,
    'net = create_model("mobileface").eval()': check_network,
}


def test_readme_has_python_examples():
    assert sum(1 for page, _, _ in BLOCKS if page == "README.md") >= 2


@pytest.mark.parametrize("page, index, block", BLOCKS, ids=[f"{page}-{k}" for page, k, _ in BLOCKS])
def test_python_example_gives_what_it_says(page, index, block):
    checks = [check for marker, check in CHECKS.items() if marker in block]
    assert len(checks) == 1, (f"{page} python block {index} needs exactly one check in tests/test_readme.py "
                              f"CHECKS (found {len(checks)})")
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, f"{page} python block {index}", "exec"), namespace)
    checks[0](namespace, printed.getvalue())
