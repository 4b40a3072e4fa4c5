import numpy as np
import pytest
from PIL import Image

from diffface.landmarks import ImageReadError, list_images, read_image


def test_modes_become_rgb_uint8(tmp_path):
    rgb = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 3 % 256).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    alpha = np.full((4, 5, 1), 255, np.uint8)
    alpha[0, 0] = 0
    Image.fromarray(np.concatenate([rgb, alpha], -1)).save(tmp_path / "rgba.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(tmp_path / "gray16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb)
    gray = read_image(tmp_path / "gray.png")
    assert gray.shape == (4, 5, 3) and (gray == rgb[..., :1]).all()
    rgba = read_image(tmp_path / "rgba.png")
    assert (rgba[0, 0] == 0).all() and (rgba[1:] == rgb[1:]).all()     # transparent -> black
    np.testing.assert_array_equal(read_image(tmp_path / "gray16.png")[..., 0], rgb[..., 0])


def test_bad_files_name_the_file(tmp_path):
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        read_image(tmp_path / "corrupt.jpg")
    with pytest.raises(ImageReadError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "full.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "full.png").read_bytes()[:40])
    with pytest.raises(ImageReadError, match="truncated.png"):
        read_image(tmp_path / "truncated.png")


def test_list_images(tmp_path):
    for name in ["b.JPG", "a.png", "notes.txt", "a.pts"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")
