"""Named, local expression modes of the built-in procedural face.

Each expression is a displacement field designed at its 1σ amplitude (``EXPRESSION_STD_MM``, the
largest vertex displacement in mm) and is exactly zero outside its region (compactly supported
masks), so e.g. ``eye_close_left`` moves only the subject's left (``x > 0``) eye region.
Skin that slides over the face (brows, cheeks, lids) keeps to the mean surface: its depth change is
read from :func:`~diffface.builtin_geometry.surface_depth` at the moved position.

Sides follow the subject: ``*_left`` acts on ``x > 0`` (image right in a frontal photo).
"""

from __future__ import annotations

import numpy as np

from .builtin_geometry import (LAYOUT, FaceGrid, FaceLayout, compact_bump, eye_lids, smoothstep,
                               surface_depth)

EXPRESSION_NAMES = (
    "jaw_open", "jaw_left", "jaw_forward", "mouth_left", "mouth_right",
    "smile_left", "smile_right", "mouth_frown_left", "mouth_frown_right", "mouth_stretch",
    "lip_pucker", "lip_press", "lips_part", "upper_lip_raise", "lower_lip_depress",
    "cheek_puff", "cheek_suck", "nose_wrinkle", "nostril_flare", "brow_raise_inner",
    "brow_raise_outer_left", "brow_raise_outer_right", "brow_lower_left", "brow_lower_right",
    "eye_close_left", "eye_close_right", "eye_squint_left", "eye_squint_right", "eye_wide",
)
"""The built-in model's expression modes, in order."""

EXPRESSION_STD_MM = {
    "jaw_open": 10.0, "jaw_left": 4.0, "jaw_forward": 3.0, "mouth_left": 4.0, "mouth_right": 4.0,
    "smile_left": 6.0, "smile_right": 6.0, "mouth_frown_left": 4.0, "mouth_frown_right": 4.0,
    "mouth_stretch": 5.0, "lip_pucker": 6.0, "lip_press": 3.0, "lips_part": 3.0,
    "upper_lip_raise": 4.0, "lower_lip_depress": 4.0, "cheek_puff": 5.0, "cheek_suck": 4.0,
    "nose_wrinkle": 3.0, "nostril_flare": 2.5, "brow_raise_inner": 5.0,
    "brow_raise_outer_left": 5.0, "brow_raise_outer_right": 5.0, "brow_lower_left": 3.0,
    "brow_lower_right": 3.0, "eye_close_left": 3.4, "eye_close_right": 3.4,
    "eye_squint_left": 2.5, "eye_squint_right": 2.5, "eye_wide": 1.5,
}
"""1σ of each expression: the largest vertex displacement (mm) of the mode at one standard deviation.

Chosen so that about 2σ is the natural extreme: the eye closes fully at +2σ of ``eye_close_*``, the
chin drops 20 mm at +2σ of ``jaw_open``."""

JAW_HINGE_YZ = (2.0, 5.0)
"""Height and depth (mm) of the jaw's hinge axis (parallel to x, near the ears)."""


def expression_fields(grid: FaceGrid, layout: FaceLayout = LAYOUT) -> np.ndarray:
    """Every named expression's displacement at 1σ.

    Args:
        grid: the mean face mesh.
        layout: feature positions.

    Returns:
        Displacements in mm, in the order of :data:`EXPRESSION_NAMES`.

    Shape:
        -> (V, 3, len(EXPRESSION_NAMES)).
    """
    fields = _ExpressionFields(grid, layout)
    return np.stack([fields.at_one_sigma(name) for name in EXPRESSION_NAMES], -1)


class _ExpressionFields:
    """One method per expression (``smile(side)`` serves ``smile_left`` and ``smile_right``),
    returning its (V, 3) displacement at an arbitrary scale; :meth:`at_one_sigma` scales it."""

    def __init__(self, grid: FaceGrid, layout: FaceLayout):
        self.layout = layout
        self.x, self.y, self.z = grid.vertices.T
        self.lower_side = grid.lower_side
        self.zero = np.zeros_like(self.x)

    # -- helpers ---------------------------------------------------------------------------------
    def vector(self, dx, dy, dz) -> np.ndarray:
        return np.stack(np.broadcast_arrays(dx + self.zero, dy + self.zero, dz + self.zero), -1)

    def slide(self, dx: np.ndarray, dy: np.ndarray, lift: np.ndarray | float = 0.0) -> np.ndarray:
        """Skin moved by ``(dx, dy)`` along the mean surface, then ``lift`` mm toward the viewer."""
        dx, dy, lift = dx + self.zero, dy + self.zero, lift + self.zero
        moved = (dx != 0) | (dy != 0)
        dz = np.where(moved, surface_depth(self.x + dx, self.y + dy, self.layout) - self.z, 0.0) + lift
        return self.vector(dx, dy, dz)

    def at_one_sigma(self, name: str) -> np.ndarray:
        """Expression ``name`` scaled so that its largest vertex displacement is ``EXPRESSION_STD_MM[name]``."""
        for suffix, side in (("_left", 1.0), ("_right", -1.0)):
            if name.endswith(suffix) and hasattr(self, name[:-len(suffix)]):
                field = getattr(self, name[:-len(suffix)])(side)
                break
        else:
            field = getattr(self, name)()
        return field * (EXPRESSION_STD_MM[name] / np.linalg.norm(field, axis=1).max())

    def jaw_weight(self) -> np.ndarray:
        """How much each vertex follows the jaw: 1 on the chin, 0 on the upper lip and upper face.

        At the mouth line the lower lip follows fully in the middle and hardly at the corners (the
        mouth opens as a lens); further down the weight rises to 1 across the whole lower face.
        """
        lay = self.layout
        below = smoothstep(lay.mouth_y, lay.mouth_y - 25.0, self.y)
        lens = np.clip(1.0 - (self.x / lay.mouth_half_width) ** 2, 0.0, None) ** 1.5
        return np.where(self.lower_side, lens + (1.0 - lens) * below, 0.0)

    def jaw_rotation(self, angle: float) -> np.ndarray:
        """Displacement of rotating everything by ``angle`` (radians, positive opens) about the hinge."""
        hinge_y, hinge_z = JAW_HINGE_YZ
        return self.vector(0.0, -angle * (self.z - hinge_z), angle * (self.y - hinge_y))

    def mouth_region(self, rx: float = 36.0, ry: float = 24.0) -> np.ndarray:
        return compact_bump(self.x, self.y, 0.0, self.layout.mouth_y, rx, ry)

    def lips_region(self) -> np.ndarray:
        lay = self.layout
        return compact_bump(self.x, self.y, 0.0, lay.mouth_y, lay.mouth_half_width + 8.0, 15.0)

    def corner_region(self, side: float, radius: float = 20.0) -> np.ndarray:
        lay = self.layout
        return compact_bump(self.x, self.y, side * lay.mouth_half_width, lay.mouth_y, radius, radius)

    def brow_region(self, side: float) -> np.ndarray:
        lay = self.layout
        return compact_bump(self.x, self.y, side * 33.0, lay.brow_y + 1.0, 26.0, 18.0) * (np.sign(self.x) == side)

    def both_sides(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        """Compact bumps at ``(±cx, cy)``."""
        return compact_bump(self.x, self.y, cx, cy, rx, ry) + compact_bump(self.x, self.y, -cx, cy, rx, ry)

    # -- the expressions (unscaled; ``side`` is +1 for *_left, -1 for *_right) -------------------
    def jaw_open(self) -> np.ndarray:
        return self.jaw_weight()[:, None] * self.jaw_rotation(0.1)

    def jaw_left(self) -> np.ndarray:
        return self.jaw_weight()[:, None] * self.vector(1.0, 0.0, -0.1 * np.sign(self.x))

    def jaw_forward(self) -> np.ndarray:
        return self.jaw_weight()[:, None] * self.vector(0.0, 0.0, 1.0)

    def mouth(self, side: float) -> np.ndarray:
        return self.slide(side * self.mouth_region(), 0.0)

    def smile(self, side: float) -> np.ndarray:
        corner = self.corner_region(side, 24.0)
        cheek = compact_bump(self.x, self.y, side * 36.0, -20.0, 26.0, 26.0) * (np.sign(self.x) == side)
        return self.slide(side * 0.55 * corner, 0.8 * corner + 0.25 * cheek, 0.8 * cheek)

    def mouth_frown(self, side: float) -> np.ndarray:
        corner = self.corner_region(side, 18.0)
        return self.slide(side * 0.2 * corner, -corner)

    def mouth_stretch(self) -> np.ndarray:
        lay = self.layout
        lips = self.lips_region()
        thin = lips * (self.y - lay.mouth_y) / 10.0
        return self.slide(self.mouth_region(40.0, 20.0) * self.x / lay.mouth_half_width, -0.4 * thin, -1.0 * lips)

    def lip_pucker(self) -> np.ndarray:
        w = self.lips_region()
        return self.vector(-0.35 * w * self.x / self.layout.mouth_half_width, 0.0, w)

    def lip_press(self) -> np.ndarray:
        w = self.lips_region()
        return self.vector(0.0, -0.5 * w * (self.y - self.layout.mouth_y) / 8.0, -0.6 * w)

    def lips_part(self) -> np.ndarray:
        lay = self.layout
        lens = np.clip(1.0 - (self.x / lay.mouth_half_width) ** 2, 0.0, None)
        upper = compact_bump(self.x, self.y, 0.0, lay.mouth_y, lay.mouth_half_width, 10.0)
        lower = compact_bump(self.x, self.y, 0.0, lay.mouth_y, lay.mouth_half_width, 14.0)
        return self.vector(0.0, np.where(self.lower_side, -lower, 0.6 * upper) * lens, 0.0)

    def upper_lip_raise(self) -> np.ndarray:
        lay = self.layout
        w = compact_bump(self.x, self.y, 0.0, lay.mouth_y + 6.0, lay.mouth_half_width + 10.0, 16.0)
        w = np.where(self.lower_side, 0.0, w)
        return self.vector(0.0, w, 0.3 * w)

    def lower_lip_depress(self) -> np.ndarray:
        lay = self.layout
        lens = np.sqrt(np.clip(1.0 - (self.x / (lay.mouth_half_width + 6.0)) ** 2, 0.0, None))
        w = compact_bump(self.x, self.y, 0.0, lay.mouth_y - 4.0, lay.mouth_half_width + 8.0, 14.0) * lens
        w = np.where(self.lower_side, w, 0.0)
        return self.vector(0.0, -w, 0.2 * w)

    def cheek_puff(self) -> np.ndarray:
        w = self.both_sides(36.0, -40.0, 28.0, 30.0)
        return self.vector(0.4 * np.sign(self.x) * w, 0.0, w)

    def cheek_suck(self) -> np.ndarray:
        return self.vector(0.0, 0.0, -self.both_sides(40.0, -38.0, 18.0, 18.0))

    def nose_wrinkle(self) -> np.ndarray:
        w = self.both_sides(12.0, self.layout.nose_tip_y + 8.0, 14.0, 22.0)
        return self.slide(0.0, w, 0.3 * w)

    def nostril_flare(self) -> np.ndarray:
        lay = self.layout
        w = self.both_sides(lay.ala_x, lay.nose_tip_y - 6.5, 9.0, 9.0)
        return self.vector(np.sign(self.x) * w, 0.0, 0.2 * w)

    def brow_raise_inner(self) -> np.ndarray:
        lay = self.layout
        w = (compact_bump(self.x, self.y, 0.0, lay.brow_y + 4.0, 34.0, 22.0)
             * smoothstep(lay.eye_y + 2.0, lay.brow_y - 2.0, self.y))
        return self.slide(0.0, w)

    def brow_raise_outer(self, side: float) -> np.ndarray:
        lay = self.layout
        w = (compact_bump(self.x, self.y, side * 42.0, lay.brow_y + 4.0, 22.0, 20.0) * (np.sign(self.x) == side)
             * smoothstep(lay.eye_y + 4.0, lay.brow_y - 2.0, self.y))
        return self.slide(0.0, w)

    def brow_lower(self, side: float) -> np.ndarray:
        w = self.brow_region(side)
        return self.slide(-side * 0.5 * w, -w, 0.5 * w)

    def eye_close(self, side: float) -> np.ndarray:
        """The eye fully closed: the upper lid lowered onto the lower lid (they meet 30% of the way
        up), the eyeball between them squeezed to a line, the lid skin above following for 9 mm."""
        lay = self.layout
        xi, upper, lower = eye_lids(self.x, lay)
        meet = lower + 0.3 * (upper - lower)
        upper_skin_mm, lower_skin_mm = 9.0, 4.0
        y = self.y
        dy = np.where(y >= upper, (meet - upper) * (1.0 - smoothstep(0.0, upper_skin_mm, y - upper)),
                      np.where(y >= meet, -(y - meet),
                               np.where(y >= lower, meet - y,
                                        (meet - lower) * (1.0 - smoothstep(0.0, lower_skin_mm, lower - y)))))
        dy = 0.97 * dy
        covered = np.where((y >= lower) & (y <= upper), 1.0,
                           np.where(y > upper, 1.0 - smoothstep(0.0, 3.0, y - upper),
                                    1.0 - smoothstep(0.0, 2.0, lower - y)))
        across = smoothstep(1.3, 0.95, np.abs(xi)) * (np.sign(self.x) == side)
        return self.slide(0.0, across * dy, lift=1.2 * across * covered)

    def eye_squint(self, side: float) -> np.ndarray:
        lay = self.layout
        _, upper, lower = eye_lids(self.x, lay)
        w = compact_bump(self.x, self.y, side * lay.eye_x, lower - 3.0, 20.0, 12.0) * (np.sign(self.x) == side)
        w = w * np.where(self.y > lower, smoothstep(upper, lower, self.y), 1.0)
        return self.slide(0.0, w, 0.3 * w)

    def eye_wide(self) -> np.ndarray:
        xi, upper, lower = eye_lids(self.x, self.layout)
        across = smoothstep(1.3, 0.95, np.abs(xi))
        middle = 0.5 * (upper + lower)
        above = np.where(self.y >= upper, 1.0 - smoothstep(0.0, 9.0, self.y - upper),
                         smoothstep(middle, upper, self.y))
        return self.slide(0.0, across * np.where(self.y > middle, above, 0.0))
