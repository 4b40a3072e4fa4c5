"""FANDetector with weights made here (random FAN, an S3FD whose heads are set by hand), fully offline.

The real loading and inference code runs end to end; sockets and every download function are
made to fail, so a test passes only if nothing is fetched.
"""

from __future__ import annotations

import math
import socket
import sys

import numpy as np
import pytest
import torch
from torch import nn

from diffface.landmarks import NoFaceError, largest_face

INSTALL = 'pip install "diffface[landmarks]"'
FAN_HOURGLASSES = 1          # the real 2D-FAN-4 has 4; one keeps the tests fast (and is read from the keys)
S3FD_FACE_SIDE = 96.0        # side of the boxes the hand-set S3FD reports
S3FD_FACE_LOGIT = 5.0        # face / background logits ±5: score 1 / (1 + e^-10)


@pytest.fixture(scope="module")
def fa(optional_import):
    optional_import("face_alignment", INSTALL)
    import face_alignment.api
    import face_alignment.detection.sfd.sfd_detector
    import face_alignment.models
    import face_alignment.utils

    return face_alignment


@pytest.fixture
def offline(fa, monkeypatch):
    """Every way face_alignment or torch hub could download now raises."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(fa.utils, "download_url_to_file", refuse)
    monkeypatch.setattr(fa.utils, "load_file_from_url", refuse)
    monkeypatch.setattr(fa.api, "load_file_from_url", refuse)
    monkeypatch.setattr(fa.detection.sfd.sfd_detector, "load_state_dict_from_url", refuse)


def random_fan(fa, hourglasses: int = FAN_HOURGLASSES) -> nn.Module:
    torch.manual_seed(0)
    return fa.models.FAN(hourglasses).eval()


def hand_set_s3fd(fa, face_level: int | None) -> dict[str, torch.Tensor]:
    """S3FD whose prediction heads ignore the image: every anchor of level ``face_level`` (0-5, stride
    ``2 ** (level + 2)``) is a face of side ``S3FD_FACE_SIDE`` centred on the anchor; nothing else is."""
    torch.manual_seed(0)
    network = fa.detection.sfd.net_s3fd.s3fd()
    layers = ["conv3_3_norm", "conv4_3_norm", "conv5_3_norm", "fc7", "conv6_2", "conv7_2"]
    for level, layer in enumerate(layers):
        conf, loc = getattr(network, f"{layer}_mbox_conf"), getattr(network, f"{layer}_mbox_loc")
        with torch.no_grad():
            conf.weight.zero_()
            loc.weight.zero_()
            logit = S3FD_FACE_LOGIT if level == face_level else -S3FD_FACE_LOGIT
            conf.bias.fill_(-logit)       # background channel(s); level 0 has 3, max-pooled
            conf.bias[-1] = logit          # face channel
            anchor_side = 4 * 2 ** (level + 2)
            loc.bias.copy_(torch.tensor([0.0, 0.0] + [math.log(S3FD_FACE_SIDE / anchor_side) / 0.2] * 2))
    return network.state_dict()


class LastHeatmaps(nn.Module):
    """FAN as face-alignment 1.4 ships it in TorchScript: one tensor out, the last heatmaps."""

    def __init__(self, fan: nn.Module):
        super().__init__()
        self.fan = fan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fan(x)[-1]


@pytest.fixture(scope="module")
def torch_home(fa, tmp_path_factory):
    """A ``$TORCH_HOME`` whose hub cache holds FAN and S3FD under face_alignment's file names."""
    from diffface.landmarks.fan import fan_weights_url, s3fd_weights_url

    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(random_fan(fa).state_dict(), checkpoints / fan_weights_url().rsplit("/", 1)[-1])
    torch.save(hand_set_s3fd(fa, face_level=5), checkpoints / s3fd_weights_url().rsplit("/", 1)[-1])
    return home


@pytest.fixture
def cached(torch_home, offline, monkeypatch):
    """The hub cache above is torch's (and face_alignment's) for this test."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return torch_home / "hub" / "checkpoints"


@pytest.fixture
def empty_cache(tmp_path, offline, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def noise_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def crop_square(box: np.ndarray) -> np.ndarray:
    """The square FAN sees for a diffface box, from the documented rule (pixel centres at integers)."""
    x0, y0, x1, y1 = np.asarray(box[:4], dtype=np.float64)
    width, height = x1 - x0, y1 - y0
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2 - 0.12 * height])
    half = 100.0 * (width + height) / 195.0
    return np.concatenate([center - half, center + half])


def assert_inside_crops(faces, tolerance_px: float = 1.0):
    for face in faces:
        x0, y0, x1, y1 = crop_square(face.box)
        assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float64
        assert np.isfinite(face.landmarks).all()
        assert (face.landmarks[:, 0] >= x0 - tolerance_px).all() and (face.landmarks[:, 0] <= x1 + tolerance_px).all()
        assert (face.landmarks[:, 1] >= y0 - tolerance_px).all() and (face.landmarks[:, 1] <= y1 + tolerance_px).all()


# --- weights: names, messages, no downloads -----------------------------------------------------------


def test_weights_urls_and_cache_paths_are_face_alignments(fa, empty_cache):
    from diffface.landmarks.fan import cached_weights_path, fan_weights_url, s3fd_weights_url

    tables = [fa.api.models_urls, getattr(fa.api, "default_model_urls", {})]   # 1.5 / 1.4
    assert fan_weights_url() in [url for table in tables for url in table.values()]
    assert s3fd_weights_url() == fa.detection.sfd.sfd_detector.models_urls["s3fd"]
    for url in (fan_weights_url(), s3fd_weights_url()):
        assert cached_weights_path(url) == empty_cache / url.rsplit("/", 1)[-1]


def test_missing_weights_say_what_to_download_and_where(empty_cache):
    from diffface.landmarks.fan import FANDetector, WeightsNotFoundError, fan_weights_url, s3fd_weights_url

    with pytest.raises(WeightsNotFoundError) as error:
        FANDetector()
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)       # what make_detector("auto") falls back on
    assert fan_weights_url() in message and s3fd_weights_url() in message
    assert str(empty_cache / fan_weights_url().rsplit("/", 1)[-1]) in message
    assert str(empty_cache / s3fd_weights_url().rsplit("/", 1)[-1]) in message
    assert "weights=" in message and "face_detector_weights=" in message
    assert len(error.value.missing) == 2
    assert not empty_cache.exists() or not any(empty_cache.iterdir())


def test_a_missing_explicit_path_is_named_with_its_url(cached, tmp_path):
    from diffface.landmarks.fan import FANDetector, WeightsNotFoundError, fan_weights_url, s3fd_weights_url

    absent = tmp_path / "my_fan.pth.tar"
    with pytest.raises(WeightsNotFoundError) as error:
        FANDetector(weights=absent)
    message = str(error.value)
    assert f"weights={absent}" in message and fan_weights_url() in message
    assert s3fd_weights_url() not in message                # S3FD is in the cache


def test_without_a_face_detector_only_fan_weights_are_needed(fa, empty_cache, tmp_path):
    from diffface.landmarks.fan import FANDetector

    weights = tmp_path / "fan.pth.tar"
    torch.save(random_fan(fa).state_dict(), weights)
    detector = FANDetector(weights=weights, face_detector=None)
    assert detector.face_detector is None
    with pytest.raises(ValueError, match="boxes="):
        detector.detect(noise_image(64, 64))
    [face] = detector.detect(noise_image(64, 64), boxes=np.array([[10.0, 12.0, 50.0, 56.0, 0.7]]))
    assert face.score == pytest.approx(0.7)
    np.testing.assert_array_equal(face.box, [10.0, 12.0, 50.0, 56.0])
    assert_inside_crops([face])


# --- end to end --------------------------------------------------------------------------------------


def test_s3fd_faces_get_68_landmarks_inside_their_crops(cached):
    from diffface.landmarks.fan import FANDetector

    detector = FANDetector()
    faces = detector.detect(noise_image(128, 128), "noise.png")
    # level 5 (stride 128) has 2 × 2 anchors on a 128² image, centred at 64 and 192
    centres = [(64.0, 64.0), (192.0, 64.0), (64.0, 192.0), (192.0, 192.0)]
    half = S3FD_FACE_SIDE / 2
    expected = np.array([[x - half, y - half, x + half, y + half] for x, y in centres]) - 0.5
    found = np.array(sorted(face.box.tolist() for face in faces))
    np.testing.assert_allclose(found, np.array(sorted(expected.tolist())), atol=1e-3)
    for face in faces:
        assert face.score == pytest.approx(1.0 / (1.0 + math.exp(-2 * S3FD_FACE_LOGIT)), rel=1e-5)
    assert_inside_crops(faces)
    assert largest_face(faces).area == pytest.approx(S3FD_FACE_SIDE ** 2, rel=1e-4)


def test_an_image_without_faces_gives_an_empty_list(fa, cached, tmp_path):
    from diffface.landmarks.fan import FANDetector

    blank = tmp_path / "s3fd_no_faces.pth"
    torch.save(hand_set_s3fd(fa, face_level=None), blank)
    detector = FANDetector(face_detector_weights=blank)
    assert detector.detect(noise_image(64, 64)) == []
    with pytest.raises(NoFaceError, match="empty.png"):
        detector.detect_one(noise_image(64, 64), "empty.png")


def test_landmarks_move_with_the_image_and_box(cached):
    """Shifting image and box by whole pixels shifts the landmarks by exactly as much (crop inside the image)."""
    from diffface.landmarks.fan import FANDetector

    detector = FANDetector(face_detector=None)
    image = noise_image(160, 160, seed=1)
    box = np.array([[50.0, 56.0, 100.0, 112.0]])
    shift = np.array([7, 13])
    moved = np.zeros((160 + shift[1], 160 + shift[0], 3), dtype=np.uint8)
    moved[shift[1]:, shift[0]:] = image
    [face] = detector.landmarks_in_boxes(image, box)
    [face_moved] = detector.detect(moved, boxes=box + np.tile(shift, 2))
    np.testing.assert_allclose(face_moved.landmarks, face.landmarks + shift, atol=1e-9)
    assert_inside_crops([face, face_moved])
    assert face.score == 1.0


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_weights_give_the_same_landmarks(fa, cached, tmp_path):
    """face-alignment 1.4's TorchScript ``.zip`` and 1.5's state dict of the same network agree."""
    from diffface.landmarks.fan import FANDetector

    script = tmp_path / "2DFAN4-cd938726ad.zip"
    torch.jit.trace(LastHeatmaps(random_fan(fa)), torch.rand(1, 3, 256, 256), check_trace=False).save(str(script))
    boxes = np.array([[30.0, 20.0, 90.0, 100.0], [5.0, 60.0, 40.0, 110.0]])
    image = noise_image(120, 120, seed=2)
    from_state = FANDetector(face_detector=None).landmarks_in_boxes(image, boxes)
    scripted = FANDetector(weights=script, face_detector=None)
    assert isinstance(scripted.network, torch.jit.ScriptModule)
    from_script = scripted.landmarks_in_boxes(image, boxes)
    for a, b in zip(from_state, from_script):
        np.testing.assert_allclose(b.landmarks, a.landmarks, atol=1e-6)


def test_four_hourglass_weights_load_like_the_real_file(fa, empty_cache, tmp_path):
    from diffface.landmarks.fan import FANDetector

    weights = tmp_path / "2DFAN4.pth.tar"
    torch.save(random_fan(fa, hourglasses=4).state_dict(), weights)
    detector = FANDetector(weights=weights, face_detector=None, flip_input=False)
    assert detector.network.num_modules == 4
    faces = detector.detect(noise_image(96, 96), boxes=np.array([[20.0, 20.0, 76.0, 80.0]]))
    assert_inside_crops(faces)


# --- the geometry against face_alignment's own code -----------------------------------------------------


def test_crop_inverse_maps_crop_pixels_to_their_image_pixels(fa):
    """Crop an image whose red/green values are its x/y pixel indices: crop pixel (u, v) must hold the
    image coordinates heatmap_to_image gives for it (up to cv2's uint8 resize rounding)."""
    from diffface.landmarks.fan import crop_corners, crop_frames, heatmap_to_image

    size = 220
    index = np.arange(size, dtype=np.uint8)
    image = np.stack(np.broadcast_arrays(index[None, :], index[:, None], np.zeros((1, 1), np.uint8)), axis=-1)
    for box in ([60.0, 70.0, 140.0, 150.0], [70.0, 81.0, 150.0, 149.0]):
        [center], [scale] = crop_frames(np.array([box]) + 0.5)
        crop = fa.utils.crop(image, center, scale, 256.0).astype(np.float64)
        ul, br = crop_corners(center, scale)
        assert (ul > 0).all() and (br < size).all()
        pixel = (np.arange(256) + 0.5) / 4.0             # crop pixel centres, in heatmap cells
        mapped = heatmap_to_image(np.stack([pixel, pixel], axis=-1)[None], ul[None], br[None])[0]
        inner = slice(2, -2)                               # cv2 clamps at the outermost pixels
        for axis, values in ((0, crop[128, inner, 0]), (1, crop[inner, 128, 1])):
            error = values - mapped[inner, axis]
            assert np.abs(error).max() < 1.0 and abs(error.mean()) < 0.25


def test_decoding_matches_face_alignment(fa):
    """Peaks equal face_alignment's (its pure-Python reference); image points within its whole-pixel rounding."""
    from diffface.landmarks.fan import crop_corners, crop_frames, decode_heatmaps, heatmap_to_image

    torch.manual_seed(3)
    heatmaps = torch.rand(2, 68, 64, 64)
    heatmaps[0, 0] = 0.0
    heatmaps[0, 0, 0, 5] = 1.0                             # a border peak is not refined
    ours = decode_heatmaps(heatmaps).numpy()
    flat = heatmaps.numpy().reshape(2, 68, -1)
    reference, _ = fa.utils._get_preds_fromhm.py_func(heatmaps.numpy(), flat.argmax(-1), None, None)
    np.testing.assert_array_equal(ours, reference)
    assert tuple(ours[0, 0]) == (5.5, 0.5)

    centers, scales = crop_frames(np.array([[40.0, 50.0, 160.0, 190.0], [300.0, 20.0, 380.0, 90.0]]))
    corners = [crop_corners(c, s) for c, s in zip(centers, scales)]
    image_points = heatmap_to_image(ours, np.stack([c[0] for c in corners]), np.stack([c[1] for c in corners]))
    for face in range(2):
        theirs = np.array([fa.utils.transform_np.py_func(p, centers[face], scales[face], 64, True) for p in ours[face]])
        side = 200.0 * scales[face]
        assert np.abs(image_points[face] - theirs).max() <= 1.5 + side / 256.0


# --- bad input ---------------------------------------------------------------------------------------


def test_bad_arguments_are_refused(fa, cached, tmp_path):
    from diffface.landmarks.fan import FANDetector

    with pytest.raises(ValueError, match="face detector"):
        FANDetector(face_detector="blazeface")
    not_weights = tmp_path / "not_weights.pth"
    not_weights.write_bytes(b"these are not weights")
    with pytest.raises(ValueError, match="not_weights.pth"):
        FANDetector(weights=not_weights, face_detector=None)
    with pytest.raises(ValueError, match="not S3FD weights"):
        FANDetector(face_detector_weights=not_weights)
    torch.save({"conv1.weight": torch.zeros(1)}, not_weights)
    with pytest.raises(ValueError, match="not FAN weights"):
        FANDetector(weights=not_weights, face_detector=None)

    detector = FANDetector(face_detector=None)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        detector.detect(np.zeros((32, 32, 3), dtype=np.float32), boxes=np.array([[0.0, 0.0, 10.0, 10.0]]))
    with pytest.raises(ValueError, match="boxes must be"):
        detector.detect(noise_image(32, 32), boxes=np.array([[0.0, 0.0, 10.0]]))
    with pytest.raises(ValueError, match="x1 > x0"):
        detector.detect(noise_image(32, 32), boxes=np.array([[10.0, 0.0, 5.0, 10.0]]))
    assert detector.detect(noise_image(32, 32), boxes=np.zeros((0, 4))) == []


def test_missing_face_alignment_names_the_install_command(monkeypatch):
    from diffface.landmarks.fan import FANDetector

    monkeypatch.setitem(sys.modules, "face_alignment", None)
    with pytest.raises(ImportError, match="pip install"):
        FANDetector()
