"""PyTorch3D as an optional rasterization backend (and the reference our rasterizer is checked against).

PyTorch3D is imported lazily, only when this backend rasterizes. Its wheels (``pipablepytorch3d``
0.7.6) are built for torch 2.2 and Python 3.11, so it lives in a venv of its own
(``tools/setup_pytorch3d_env.sh`` creates ``.venv-p3d``).

Convention mapping
------------------
Our screen space is pixels, ``+u`` right and ``+v`` down, pixel ``(i, j)`` centred at
``(u, v) = (j, i)``. PyTorch3D's NDC has ``+X`` left and ``+Y`` up; the shorter image side spans
``[-1, 1]`` and pixel ``(i, j)`` of its output is centred at
``X = (W - 1 - 2j) / S``, ``Y = (H - 1 - 2i) / S`` with ``S = min(H, W)``. So
``X = (W - 1 - 2u) / S`` and ``Y = (H - 1 - 2v) / S`` map our vertices to PyTorch3D's with the
same pixel centres; depth stays the camera ``z``. Both axes flip, which is a rotation, so the
winding (and so back-face culling) means the same in both. Barycentrics are invariant under this
affine map, and with ``perspective_correct=True`` PyTorch3D's are ours.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from diffface.checks import check_shape

from .fragments import BACKGROUND_DEPTH, Fragments
from .rasterize import MeshRasterizer, RasterSettings, _check_inputs, _image_hw, rasterize_meshes

INSTALL_HINT = ("PyTorch3D is not installed. Install it with `pip install pipablepytorch3d==0.7.6`; its wheels "
                "need torch 2.2 and Python 3.11, so use a venv of its own (tools/setup_pytorch3d_env.sh creates "
                ".venv-p3d with torch==2.2.2).")

RasterizeFn = Callable[..., Fragments]
BACKENDS = ("auto", "builtin", "pytorch3d")


def pytorch3d_available() -> bool:
    """Whether PyTorch3D's mesh rasterizer (with its compiled extension) can be imported."""
    try:
        from pytorch3d.renderer.mesh import rasterize_meshes  # noqa: F401
        from pytorch3d.structures import Meshes  # noqa: F401
    except (ImportError, OSError):  # OSError: an extension built for another torch
        return False
    return True


def _import_pytorch3d():
    try:
        from pytorch3d.renderer.mesh import rasterize_meshes
        from pytorch3d.structures import Meshes
    except (ImportError, OSError) as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from error
    return rasterize_meshes, Meshes


def screen_to_pytorch3d_ndc(vertices_screen: torch.Tensor, image_size: int | tuple[int, int]) -> torch.Tensor:
    """Our pixel-space vertices ``(u, v, z)`` to PyTorch3D's NDC ``(X, Y, z)`` for an ``(H, W)`` image.

    Shape:
        vertices_screen: (B, V, 3) -> (B, V, 3).

    Example:
        >>> screen_to_pytorch3d_ndc(torch.tensor([[[-0.5, -0.5, 3.0]]]), (4, 8))  # top-left image corner
        tensor([[[2., 1., 3.]]])
    """
    check_shape(vertices_screen, ["B", "V", 3], "vertices_screen")
    height, width = _image_hw(image_size)
    short = float(min(height, width))
    u, v, z = vertices_screen.unbind(-1)
    return torch.stack([(width - 1 - 2 * u) / short, (height - 1 - 2 * v) / short, z], -1)


def rasterize_meshes_pytorch3d(vertices_screen: torch.Tensor, faces: torch.Tensor, image_size: int | tuple[int, int],
                               cull_backfaces: bool = False, **_ignored) -> Fragments:
    """Rasterize with PyTorch3D (naive, exact: ``bin_size=0``, one face per pixel, perspective-correct).

    Same inputs and outputs as :func:`diffface.renderers.rasterize.rasterize_meshes`; ``pix_to_face``
    indexes the shared ``faces`` (not PyTorch3D's packed faces). PyTorch3D works in float32 and culls
    faces with a vertex at ``z < 1e-8``; it leaves pixel centres exactly on an edge out, where the
    built-in rasterizer keeps them. Other keyword arguments of the built-in rasterizer (``near``,
    ``max_pairs_per_chunk``) are accepted and ignored.

    Raises:
        ImportError: PyTorch3D is not installed (the message says how to install it).

    Shape:
        vertices_screen: (B, V, 3); faces: (F, 3) -> Fragments with (B, H, W) maps.
    """
    _check_inputs(vertices_screen, faces)
    rasterize, Meshes = _import_pytorch3d()
    height, width = _image_hw(image_size)
    batch, num_faces = vertices_screen.shape[0], faces.shape[0]
    ndc = screen_to_pytorch3d_ndc(vertices_screen.float(), (height, width))
    meshes = Meshes(verts=ndc, faces=faces.long()[None].expand(batch, -1, -1))
    packed, zbuf, bary, _ = rasterize(meshes, image_size=(height, width), blur_radius=0.0, faces_per_pixel=1,
                                      bin_size=0, perspective_correct=True, cull_backfaces=cull_backfaces)
    packed, zbuf, bary = packed[..., 0], zbuf[..., 0], bary[..., 0, :]
    mask = packed >= 0
    first_face = (torch.arange(batch, device=packed.device) * num_faces).view(batch, 1, 1)
    dtype = vertices_screen.dtype
    return Fragments(pix_to_face=torch.where(mask, packed - first_face, -1),
                     bary_coords=torch.where(mask[..., None], bary, 0.0).to(dtype),
                     zbuf=torch.where(mask, zbuf, BACKGROUND_DEPTH).to(dtype), mask=mask)


class PyTorch3DRasterizer(nn.Module):
    """:func:`rasterize_meshes_pytorch3d` as a module, a drop-in for :class:`~diffface.renderers.rasterize.MeshRasterizer`.

    Args:
        settings: :class:`~diffface.renderers.rasterize.RasterSettings` (``image_size`` and
            ``cull_backfaces`` are used) or just the image size.

    Shape:
        forward(vertices_screen (B, V, 3), faces (F, 3)) -> Fragments with (B, H, W) maps.
    """

    def __init__(self, settings: RasterSettings | int | tuple[int, int]):
        super().__init__()
        self.settings = settings if isinstance(settings, RasterSettings) else RasterSettings(image_size=settings)
        _image_hw(self.settings.image_size)

    def forward(self, vertices_screen: torch.Tensor, faces: torch.Tensor) -> Fragments:
        return rasterize_meshes_pytorch3d(vertices_screen, faces, self.settings.image_size,
                                          cull_backfaces=self.settings.cull_backfaces)


def select_backend(name: str = "auto", device: torch.device | str | None = None) -> RasterizeFn:
    """The rasterize function of a backend: ``"builtin"``, ``"pytorch3d"`` or ``"auto"``.

    All share the signature ``(vertices_screen, faces, image_size, cull_backfaces=False, ...) -> Fragments``.
    ``"auto"`` picks PyTorch3D only for a CUDA ``device`` when it is installed (its CUDA rasterizer
    is coarse-to-fine); otherwise the built-in one, which needs nothing and on the CPU is two to three
    orders of magnitude faster than PyTorch3D's naive CPU rasterizer.

    Raises:
        ValueError: an unknown name. ImportError: ``"pytorch3d"`` without PyTorch3D installed.

    Example:
        >>> select_backend("builtin") is rasterize_meshes
        True
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown rasterizer backend {name!r}; choose one of {BACKENDS}")
    if name == "auto":
        on_cuda = device is not None and torch.device(device).type == "cuda"
        name = "pytorch3d" if on_cuda and pytorch3d_available() else "builtin"
    if name == "builtin":
        return rasterize_meshes
    _import_pytorch3d()
    return rasterize_meshes_pytorch3d


def make_rasterizer(settings: RasterSettings | int | tuple[int, int], backend: str = "auto",
                    device: torch.device | str | None = None) -> nn.Module:
    """A rasterizer module for ``backend`` (see :func:`select_backend`) with these settings."""
    if select_backend(backend, device) is rasterize_meshes_pytorch3d:
        return PyTorch3DRasterizer(settings)
    return MeshRasterizer(settings)
