"""``Fragments``: what a rasterizer hands to a shader (PyTorch3D's ``Fragments`` with one face per pixel)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: ``zbuf`` value of pixels that no face covers (PyTorch3D's convention; read ``mask``, not this).
BACKGROUND_DEPTH = -1.0


@dataclass(frozen=True)
class Fragments:
    """The visible face of every pixel and where on it the pixel centre falls.

    Pixel ``(i, j)`` (row ``i``, column ``j``) has its centre at ``u = j``, ``v = i`` in the pixel
    coordinates of :func:`diffface.camera.project_points` (OpenCV convention).

    Attributes:
        pix_to_face: index into the shared ``faces (F, 3)`` of the nearest face covering the pixel
            centre, ``-1`` on background. Discrete: carries no gradient.
        bary_coords: perspective-correct barycentric coordinates of the pixel centre in that face
            (weights of its vertices 0, 1, 2; they sum to one), zeros on background.
            Differentiable with respect to the vertices.
        zbuf: camera depth ``z`` of the visible surface at the pixel centre,
            :data:`BACKGROUND_DEPTH` (``-1``) on background. Differentiable.
        mask: ``pix_to_face >= 0``.

    Shape:
        pix_to_face: (B, H, W) long; bary_coords: (B, H, W, 3); zbuf: (B, H, W); mask: (B, H, W) bool.
    """

    pix_to_face: torch.Tensor
    bary_coords: torch.Tensor
    zbuf: torch.Tensor
    mask: torch.Tensor

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.pix_to_face.shape[1]), int(self.pix_to_face.shape[2])

    def detach(self) -> "Fragments":
        """The same fragments with ``bary_coords`` and ``zbuf`` detached from the graph."""
        return Fragments(self.pix_to_face, self.bary_coords.detach(), self.zbuf.detach(), self.mask)
