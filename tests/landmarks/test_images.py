import numpy as np
import pytest
from PIL import Image

from diffface.landmarks import ImageReadError, left_out_note, list_images, read_image, scan_image_folder


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


def test_netpbm_photos_are_read_and_listed(tmp_path):
    rgb = (np.arange(6 * 7 * 3).reshape(6, 7, 3) * 5 % 256).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "colour.ppm")
    Image.fromarray(rgb[..., 1]).save(tmp_path / "gray.pgm")
    Image.fromarray(rgb).save(tmp_path / "any.pnm", format="PPM")
    (tmp_path / "colour.pts").write_text("")
    assert [p.name for p in list_images(tmp_path)] == ["any.pnm", "colour.ppm", "gray.pgm"]
    np.testing.assert_array_equal(read_image(tmp_path / "colour.ppm"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "any.pnm"), rgb)
    assert (read_image(tmp_path / "gray.pgm") == rgb[..., 1:2]).all()


def test_scan_counts_the_files_left_out(tmp_path):
    for name in ["a.png", "a.pts", "a.json", "b.npy", "c.gif", "d.GIF", "notes.txt", "README", ".DS_Store"]:
        (tmp_path / name).write_bytes(b"")
    scan = scan_image_folder(tmp_path)
    assert [p.name for p in scan.images] == ["a.png"]
    assert scan.left_out == {".gif": 2, ".txt": 1, "": 1}  # annotations and hidden files are not counted
    note = left_out_note(tmp_path, scan.left_out)
    assert note.startswith(f"{tmp_path}: left out 4 files that are not an image ((no suffix): 1, .gif: 2, .txt: 1)")
    assert ".ppm" in note
    assert left_out_note(tmp_path, {}) is None


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    """20000 x 10000 pixels (200 megapixels) in a 24 kB file: a decompression bomb for Pillow's defaults."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("1", (20000, 10000)).save(path)
    return path


def test_pixel_limit_refuses_huge_images_before_decoding(huge_png, tmp_path):
    with pytest.raises(ImageReadError, match=r"huge.png: image too large \(20000x10000 = 200,000,000 pixels, "
                                             r"the limit is 89,478,485"):
        read_image(huge_png)
    with pytest.raises(ImageReadError, match="limit is 1,000"):
        read_image(huge_png, max_pixels=1000)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ImageReadError, match=r"small.png: image too large \(30x20 = 600 pixels"):
        read_image(tmp_path / "small.png", max_pixels=599)
    assert read_image(tmp_path / "small.png", max_pixels=600).shape == (20, 30, 3)


def test_pixel_limit_can_be_raised_above_pillows(tmp_path, monkeypatch):
    """Pillow refuses images over twice its global limit; a larger ``max_pixels`` (or 0: none) is honoured,
    and Pillow's global is left as it was."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.fromarray(np.full((20, 30, 3), 7, np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "small.png")
    assert (read_image(tmp_path / "small.png", max_pixels=0) == 7).all()
    assert read_image(tmp_path / "small.png", max_pixels=600).shape == (20, 30, 3)
    assert Image.MAX_IMAGE_PIXELS == 100
