"""face-alignment's FAN (2D-FAN-4 heatmap network) with its S3FD face detector, from local files only.

The ``face-alignment`` package (Bulat & Tzimiropoulos, 2017) downloads its weights on first use;
diffface never downloads anything at run time, so :class:`FANDetector` looks for the files first
and, when one is missing, raises :class:`WeightsNotFoundError` naming the URL and where to save it.
It loads the networks itself and runs face_alignment's own crop and S3FD code, so no network
request can happen and ``face_alignment.FaceAlignment`` (whose FAN weights can only come from the
torch hub cache, and which ``torch.compile``-s into ``~/.cache`` by default) is not used.

Weights, named as face_alignment expects them in ``$TORCH_HOME/hub/checkpoints`` (URLs are read
from the installed package's own tables, see :func:`fan_weights_url` / :func:`s3fd_weights_url`):

* face-alignment 1.5: ``2DFAN4-11f355bf06.pth.tar`` (a state dict of ``face_alignment.models.FAN``);
* face-alignment 1.4: ``2DFAN4-cd938726ad.zip`` (the same network as TorchScript);
* both: ``s3fd-619a316812.pth`` (the S3FD state dict).

Coordinates: S3FD boxes and face_alignment's crop treat pixel ``i`` as the interval ``[i, i + 1]``;
diffface puts pixel centres at integers, so boxes are moved by -0.5 on the way out and +0.5 on the
way in. Landmarks are decoded in floating point through the exact inverse of the crop FAN saw
(face_alignment itself truncates them to whole pixels and inverts the nominal, unrounded crop, so
its numbers differ from these by up to about ``1 + side / 256`` pixels, ``side`` being the crop side).
"""

from __future__ import annotations

import importlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from .detection import NUM_LANDMARKS, FaceDetection, LandmarkDetector, check_rgb_image

INSTALL_HINT = 'pip install "diffface[landmarks]"  (or: pip install face-alignment)'

#: FAN input side in pixels (``face_alignment.utils.CROP_RESOLUTION``)
CROP_SIZE = 256
#: FAN heatmap side (``face_alignment.utils.HEATMAP_RESOLUTION``)
HEATMAP_SIZE = 64
#: crop side = ``SCALE_FACTOR * scale`` pixels (``face_alignment.utils.SCALE_FACTOR``)
SCALE_FACTOR = 200.0
#: ``scale = (box width + box height) / REFERENCE_SCALE`` (S3FD's ``reference_scale``)
REFERENCE_SCALE = 195.0
#: the crop centre sits this fraction of the box height above the box centre (FAN was trained so)
CENTER_Y_OFFSET = 0.12
#: face detectors whose weights can be checked offline; ``None``: boxes must be given to ``detect``
FACE_DETECTORS = ("sfd", None)


class WeightsNotFoundError(FileNotFoundError):
    """FAN or S3FD weights are not on disk (the message says which URL to download and where to put it).

    Attributes:
        missing: one :class:`MissingWeights` per absent file.
    """

    def __init__(self, missing: list[MissingWeights]):
        self.missing = list(missing)
        lines = "\n".join(f"  - {entry.describe()}" for entry in self.missing)
        super().__init__(f"face-alignment weights not found (diffface never downloads at run time):\n{lines}")


@dataclass(frozen=True)
class MissingWeights:
    """One weights file that is not on disk.

    Attributes:
        what: the network, in words.
        path: where it was looked for.
        url: where face_alignment downloads it from.
        argument: the ``FANDetector`` argument that takes its path.
        explicit: the path came from that argument (not from the torch hub cache).
    """

    what: str
    path: Path
    url: str
    argument: str
    explicit: bool

    def describe(self) -> str:
        """One line: the missing file, the URL, and where to save it."""
        if self.explicit:
            return (f"{self.what}: {self.argument}={self.path} does not exist; download {self.url} to that path "
                    f"(or save it as {cached_weights_path(self.url)} and leave {self.argument} unset)")
        return (f"{self.what}: {self.path} does not exist; download {self.url} and save it there, "
                f"or pass its path as FANDetector({self.argument}=...)")


def _import_face_alignment(submodule: str = "") -> ModuleType:
    """``face_alignment`` (or one of its submodules), or an ImportError saying how to install it."""
    try:
        import face_alignment
    except ImportError as exc:
        raise ImportError(f"the FAN landmark detector needs the face-alignment package: {INSTALL_HINT} ({exc})") from exc
    return importlib.import_module(f"face_alignment.{submodule}") if submodule else face_alignment


def fan_weights_url() -> str:
    """The URL face_alignment downloads 2D-FAN-4 from, taken from the installed package's table.

    1.5 keeps it in ``face_alignment.api.models_urls``; 1.4 keeps the current TorchScript file in
    ``default_model_urls`` (its ``models_urls`` lists builds for torch 1.5 and 1.6 only).

    Returns:
        The URL; its last part is the file name expected in the torch hub cache.
    """
    api = _import_face_alignment("api")
    table = getattr(api, "default_model_urls", api.models_urls)
    return table["2DFAN-4"]


def s3fd_weights_url() -> str:
    """The URL face_alignment downloads the S3FD face detector from (its ``sfd_detector.models_urls``)."""
    return _import_face_alignment("detection.sfd.sfd_detector").models_urls["s3fd"]


def cached_weights_path(url: str) -> Path:
    """Where face_alignment (through torch hub) keeps the file of ``url``: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _locate(path: str | Path | None, url: str, what: str, argument: str) -> tuple[Path, MissingWeights | None]:
    """The weights file to use (the given path, else the hub cache), and what is missing if it is absent."""
    explicit = path is not None
    located = Path(path).expanduser() if explicit else cached_weights_path(url)
    if located.is_file():
        return located, None
    return located, MissingWeights(what=what, path=located, url=url, argument=argument, explicit=explicit)


def find_weights(weights: str | Path | None, face_detector_weights: str | Path | None,
                 need_face_detector: bool = True) -> tuple[Path, Path | None]:
    """The FAN and S3FD weight files, from the given paths or the torch hub cache.

    Args:
        weights: FAN file, or None for face_alignment's file in the hub cache.
        face_detector_weights: S3FD file, or None for the hub cache.
        need_face_detector: False when no face detector is used (its file is then not looked for).

    Returns:
        ``(fan_path, s3fd_path)``; ``s3fd_path`` is None when not needed.

    Raises:
        WeightsNotFoundError: listing every missing file with its URL and where to put it.
    """
    fan_path, fan_missing = _locate(weights, fan_weights_url(), "2D-FAN-4 landmark network", "weights")
    s3fd_path, s3fd_missing = None, None
    if need_face_detector:
        s3fd_path, s3fd_missing = _locate(face_detector_weights, s3fd_weights_url(), "S3FD face detector",
                                          "face_detector_weights")
    missing = [entry for entry in (fan_missing, s3fd_missing) if entry is not None]
    if missing:
        raise WeightsNotFoundError(missing)
    return fan_path, s3fd_path


def _is_torchscript_archive(path: Path) -> bool:
    """TorchScript archives (face-alignment 1.4's ``.zip``) hold ``code/``; ``torch.save`` files do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _fan_from_state_dict(state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """``face_alignment.models.FAN`` with ``state`` loaded; the number of hourglasses is read from the keys."""
    try:
        models = _import_face_alignment("models")
    except ModuleNotFoundError as exc:
        raise ValueError(f"{path}: a FAN state dict needs face-alignment>=1.5 (1.4 reads TorchScript .zip "
                         f"weights): pip install -U face-alignment") from exc
    num_modules = sum(1 for key in state if re.fullmatch(r"l\d+\.weight", key))
    if num_modules == 0:
        raise ValueError(f"{path}: not FAN weights (no heatmap layer 'l0.weight' among {len(state)} tensors)")
    network = models.FAN(num_modules)
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}: not {num_modules}-hourglass FAN weights ({exc})") from exc
    return network


def load_fan(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load FAN from a local file: TorchScript (face-alignment 1.4) or a state dict (1.5).

    Args:
        path: the weights file.
        device: where the network runs.

    Returns:
        The network in eval mode; it maps images to (a list ending with) heatmaps.

    Raises:
        ValueError: naming the file, when it is not FAN weights.

    Shape:
        network input: (N, 3, 256, 256) RGB in [0, 1]; heatmaps: (N, 68, 64, 64).
    """
    path = Path(path)
    try:
        if _is_torchscript_archive(path):
            return torch.jit.load(str(path), map_location=device).to(device).eval()
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch.load fails on a foreign file with errors of many types
        raise ValueError(f"{path}: not FAN weights ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not FAN weights (holds a {type(state).__name__}, not a state dict)")
    return _fan_from_state_dict(state, path).to(device).eval()


def load_s3fd(path: str | Path, device: str | torch.device = "cpu", score_threshold: float = 0.5):
    """face_alignment's S3FD detector with weights from a local file (never downloads).

    Args:
        path: the S3FD state dict (``s3fd-619a316812.pth``).
        device: where the network runs.
        score_threshold: faces scoring below this are dropped (after non-maximum suppression at IoU 0.3).

    Returns:
        A ``face_alignment.detection.sfd.SFDDetector``.

    Raises:
        ValueError: naming the file, when it is not S3FD weights.
    """
    sfd = _import_face_alignment("detection.sfd.sfd_detector")
    try:
        return sfd.SFDDetector(device=str(device), path_to_detector=str(path), verbose=False,
                               filter_threshold=score_threshold)
    except Exception as exc:  # as in load_fan: a foreign file fails in torch.load with many error types
        raise ValueError(f"{path}: not S3FD weights ({type(exc).__name__}: {exc})") from exc


def crop_frames(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FAN's crop centre and scale for each box, as face_alignment computes them.

    Args:
        boxes: ``(x0, y0, x1, y1)`` in face_alignment's pixel convention (pixel ``i`` spans ``[i, i + 1]``).

    Returns:
        ``(centers, scales)``; the crop is a square of side ``200 * scale`` around ``center``.

    Shape:
        boxes: (K, 4) -> centers (K, 2), scales (K,).
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    centers = np.stack([boxes[:, 0] + width / 2, boxes[:, 1] + height / 2 - CENTER_Y_OFFSET * height], axis=1)
    return centers, (width + height) / REFERENCE_SCALE


def crop_corners(center: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The integer pixel corners face_alignment's ``crop`` cuts out before resizing to 256².

    Pixel ``ul + k`` of the image becomes pixel ``k`` of the cut-out (zero padded where it leaves the
    image), which is then resized from ``br - ul`` to 256 pixels a side.

    Args:
        center: crop centre, face_alignment's convention.
        scale: crop scale (side ``200 * scale``).

    Returns:
        ``(ul, br)``, computed by the same calls ``face_alignment.utils.crop`` makes.

    Shape:
        center: (2,) -> ul (2,), br (2,) int64.
    """
    utils = _import_face_alignment("utils")
    ul = utils.transform([1, 1], center, scale, float(CROP_SIZE), True)
    br = utils.transform([CROP_SIZE, CROP_SIZE], center, scale, float(CROP_SIZE), True)
    return ul.numpy().astype(np.int64), br.numpy().astype(np.int64)


def decode_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """Heatmap peaks, moved a quarter cell towards the higher neighbour (face_alignment's rule).

    Args:
        heatmaps: FAN output.

    Returns:
        Peak positions in heatmap pixels, cell ``j`` spanning ``[j, j + 1]`` (so a plain peak is at ``j + 0.5``).
        Peaks on the border are not moved.

    Shape:
        heatmaps: (N, K, H, W) -> (N, K, 2) as ``(x, y)``.
    """
    count, points, height, width = heatmaps.shape
    flat = heatmaps.reshape(count, points, height * width)
    index = flat.argmax(dim=-1)
    row, col = index // width, index % width

    def value_at(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        cell = y.clamp(0, height - 1) * width + x.clamp(0, width - 1)
        return flat.gather(-1, cell.unsqueeze(-1)).squeeze(-1)

    step = torch.stack([torch.sign(value_at(row, col + 1) - value_at(row, col - 1)),
                        torch.sign(value_at(row + 1, col) - value_at(row - 1, col))], dim=-1)
    interior = (col > 0) & (col < width - 1) & (row > 0) & (row < height - 1)
    peaks = torch.stack([col, row], dim=-1).to(heatmaps.dtype) + 0.5
    return peaks + 0.25 * step * interior.unsqueeze(-1).to(heatmaps.dtype)


def heatmap_to_image(points: np.ndarray, ul: np.ndarray, br: np.ndarray) -> np.ndarray:
    """Heatmap positions to image pixels (centres at integers), inverting face_alignment's crop exactly.

    Heatmap ``[0, 64]`` covers crop ``[0, 256]``, which covers image ``[ul, br]`` (pixel ``i``
    spanning ``[i, i + 1]``, as cv2's resize aligns pixel edges); the final -0.5 moves to diffface's
    pixel-centre convention.

    Args:
        points: from :func:`decode_heatmaps`.
        ul: crop corners per face, from :func:`crop_corners`.
        br: crop corners per face.

    Returns:
        Image coordinates, 0-based, pixel centres at integers.

    Shape:
        points: (N, K, 2); ul, br: (N, 2) -> (N, K, 2) float64.
    """
    ul = np.asarray(ul, dtype=np.float64)[:, None, :]
    size = np.asarray(br, dtype=np.float64)[:, None, :] - ul
    crop = np.asarray(points, dtype=np.float64) * (CROP_SIZE / HEATMAP_SIZE)
    return ul + crop * size / CROP_SIZE - 0.5


def _check_boxes(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
        raise ValueError(f"boxes must be (K, 4) (x0, y0, x1, y1) or (K, 5) with a score, got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes must be finite")
    if ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
        raise ValueError("boxes must have x1 > x0 and y1 > y0")
    return boxes


class FANDetector(LandmarkDetector):
    """face-alignment's 2D-FAN-4 landmarks on faces found by its S3FD detector, all from local weight files.

    Args:
        weights: FAN weights (1.5's ``.pth.tar`` state dict or 1.4's TorchScript ``.zip``); default: the file
            face_alignment would download, in the torch hub cache (``$TORCH_HOME/hub/checkpoints``).
        face_detector_weights: S3FD weights; default: ``s3fd-619a316812.pth`` in the hub cache.
        device: where both networks run.
        face_detector: ``"sfd"``, or None to skip face detection (``detect`` then needs ``boxes``).
        score_threshold: S3FD faces scoring below this are dropped.
        flip_input: also run FAN on the mirrored crop and add the mirrored heatmaps (face_alignment's
            default in 1.5; twice the FAN time).
        max_batch_size: faces per FAN forward pass.

    Raises:
        ImportError: face-alignment is not installed (the message gives the install command).
        WeightsNotFoundError: a weights file is missing (the message gives its URL and where to save it).
        ValueError: an unknown ``face_detector``, or a file that is not the expected weights.

    Example:
        >>> detector = FANDetector()                          # weights in ~/.cache/torch/hub/checkpoints
        >>> faces = detector.detect(read_image("photo.jpg"))
        >>> faces[0].landmarks.shape, faces[0].box.shape
        ((68, 2), (4,))
        >>> detector.detect(image, boxes=np.array([[40, 50, 200, 230]]))   # skip S3FD
    """

    name = "fan"

    def __init__(self, weights: str | Path | None = None, face_detector_weights: str | Path | None = None,
                 device: str | torch.device = "cpu", face_detector: str | None = "sfd",
                 score_threshold: float = 0.5, flip_input: bool = True, max_batch_size: int = 8):
        if face_detector not in FACE_DETECTORS:
            raise ValueError(f"unknown face detector {face_detector!r}; choose one of {FACE_DETECTORS} "
                             "(face_alignment's other detectors download their weights, so they are not offered)")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        _import_face_alignment()
        self.device = torch.device(device)
        self.weights_path, self.face_detector_weights_path = find_weights(
            weights, face_detector_weights, need_face_detector=face_detector is not None)
        self.network = load_fan(self.weights_path, self.device)
        self.face_detector = (load_s3fd(self.face_detector_weights_path, self.device, score_threshold)
                              if face_detector is not None else None)
        self.flip_input = flip_input
        self.max_batch_size = int(max_batch_size)

    def detect(self, image: np.ndarray, image_path: str | Path | None = None,
               boxes: np.ndarray | None = None) -> list[FaceDetection]:
        """Every face S3FD finds, with FAN's landmarks (or the landmarks inside given ``boxes``).

        Args:
            image: the photo.
            image_path: named in error messages.
            boxes: face boxes ``(x0, y0, x1, y1)`` in diffface pixels, optionally with a score column;
                given, the face detector is skipped.

        Returns:
            One :class:`FaceDetection` per face (S3FD's order: best score first); empty when no face is found.

        Shape:
            image: (H, W, 3) uint8 RGB; boxes: (K, 4) or (K, 5).
        """
        image = check_rgb_image(image, image_path)
        if boxes is None:
            if self.face_detector is None:
                raise ValueError(f"{image_path or 'image'}: this FANDetector has no face detector "
                                 "(face_detector=None); pass boxes=")
            boxes = self.detect_boxes(image)
        return self.landmarks_in_boxes(image, boxes)

    def detect_boxes(self, image: np.ndarray) -> np.ndarray:
        """S3FD's face boxes with scores, in diffface pixels (pixel centres at integers).

        Returns:
            ``(x0, y0, x1, y1, score)`` per face, after non-maximum suppression and the score threshold.

        Shape:
            image: (H, W, 3) uint8 RGB -> (K, 5).
        """
        if self.face_detector is None:
            raise ValueError("this FANDetector was built with face_detector=None")
        found = self.face_detector.detect_from_image(check_rgb_image(image, None))
        boxes = np.array(found, dtype=np.float64).reshape(-1, 5)
        boxes[:, :4] -= 0.5
        return boxes

    def landmarks_in_boxes(self, image: np.ndarray, boxes: np.ndarray) -> list[FaceDetection]:
        """FAN's 68 landmarks for each given face box.

        Args:
            image: the photo.
            boxes: ``(x0, y0, x1, y1)`` in diffface pixels, optionally followed by a score (else 1).

        Returns:
            One :class:`FaceDetection` per box, in order; each landmark lies in the square crop FAN sees
            (side ``200 * (w + h) / 195`` around the box centre raised by 12 % of its height).

        Shape:
            image: (H, W, 3) uint8 RGB; boxes: (K, 4) or (K, 5).
        """
        image = check_rgb_image(image, None)
        boxes = _check_boxes(boxes)
        if len(boxes) == 0:
            return []
        centers, scales = crop_frames(boxes[:, :4] + 0.5)
        crops = [self._crop(image, center, scale) for center, scale in zip(centers, scales)]
        corners = [crop_corners(center, scale) for center, scale in zip(centers, scales)]
        peaks = decode_heatmaps(self._heatmaps(np.stack(crops))).cpu().numpy()
        landmarks = heatmap_to_image(peaks, np.stack([c[0] for c in corners]), np.stack([c[1] for c in corners]))
        scores = boxes[:, 4] if boxes.shape[1] == 5 else np.ones(len(boxes))
        return [FaceDetection(landmarks=points, box=box[:4], score=float(score))
                for points, box, score in zip(landmarks, boxes, scores)]

    @staticmethod
    def _crop(image: np.ndarray, center: np.ndarray, scale: float) -> np.ndarray:
        """face_alignment's 256² crop. Shape: (H, W, 3) uint8 -> (256, 256, 3) uint8."""
        return _import_face_alignment("utils").crop(image, center, scale, float(CROP_SIZE))

    def _heatmaps(self, crops: np.ndarray) -> torch.Tensor:
        """FAN heatmaps of 256² crops, in batches, plus the mirrored pass when ``flip_input``.

        Shape:
            crops: (N, 256, 256, 3) uint8 -> (N, 68, 64, 64).
        """
        utils = _import_face_alignment("utils")
        inputs = torch.from_numpy(crops).permute(0, 3, 1, 2).to(self.device, torch.float32) / 255.0
        chunks = []
        with torch.inference_mode():
            for batch in inputs.split(self.max_batch_size):
                heatmaps = self._forward(batch)
                if self.flip_input:
                    heatmaps = heatmaps + utils.flip(self._forward(batch.flip(-1)), is_label=True)
                chunks.append(heatmaps)
        return torch.cat(chunks)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """One FAN pass; the last hourglass's heatmaps. Shape: (B, 3, 256, 256) -> (B, 68, 64, 64)."""
        output = self.network(batch)
        heatmaps = output[-1] if isinstance(output, (list, tuple)) else output
        expected = (batch.shape[0], NUM_LANDMARKS, HEATMAP_SIZE, HEATMAP_SIZE)
        if tuple(heatmaps.shape) != expected:
            raise ValueError(f"{self.weights_path}: FAN gave heatmaps {tuple(heatmaps.shape)}, expected {expected}")
        return heatmaps.float()
