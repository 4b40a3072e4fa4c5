"""Geometry of the built-in procedural face: the grid mesh, its depth function, albedo mean,
iBUG-68 landmarks and jaw contour lines.

The face is a regular grid of ``rows x columns`` vertices. Row ``r`` sits at height ``y_r`` (rows
are denser around the eyes and the mouth); column ``c`` sits at the normalised lateral position
``s_c`` in [-1, 1], the same for every row, so that ``x = s_c · half_width(y)`` warps the grid into
the outline of a face (forehead, cheekbones, jaw, chin). The depth ``z = surface_depth(x, y)`` is a
superellipse cross-section (flat front, sides receding steeply to the border, so a turned face has
a real silhouette) plus smooth features: brow ridge, eye sockets, eyeballs and lids, nose, cheeks,
lips, chin. Between the two rows that meet at the mouth line the triangles are left out (the
mouth slit), so the lips can part.

Units and axes follow :mod:`diffface.model_format`: millimetres, +x toward the subject's left,
+y up, +z toward the viewer; the origin is near the centre of the head, the front of the face is at
``z`` ≈ 95 and the nose tip at ``z`` ≈ 125.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FaceLayout:
    """Where the features of the procedural face are (millimetres, model axes).

    Bilateral features are given for the subject's left side (``x > 0``) and mirrored.
    """

    chin_y: float = -100.0
    top_y: float = 95.0
    eye_x: float = 32.0
    eye_y: float = 20.0
    eye_half_width: float = 15.0
    upper_lid_height: float = 6.0
    lower_lid_height: float = 4.5
    brow_y: float = 35.0
    sellion_y: float = 21.0
    nose_tip_y: float = -15.0
    subnasale_y: float = -28.0
    ala_x: float = 13.0
    mouth_y: float = -49.0
    mouth_half_width: float = 25.0
    upper_lip_height: float = 8.0
    lower_lip_height: float = 10.0
    chin_point_y: float = -84.0
    cross_section_exponent: float = 2.6


LAYOUT = FaceLayout()

# Control points (y, value) of the outline and of the depth profiles, bottom to top.
_HALF_WIDTH_KNOTS = ((-100, 10), (-97, 21), (-92, 31), (-84, 40), (-72, 49), (-58, 56), (-40, 63),
                     (-20, 68), (0, 70), (20, 70), (40, 67), (65, 63), (95, 57))
_BORDER_DEPTH_KNOTS = ((-100, 74), (-97, 66), (-92, 55), (-84, 43), (-72, 29), (-58, 17), (-40, 9),
                       (-20, 6), (10, 6), (40, 9), (70, 14), (95, 20))
_CENTRE_DEPTH_KNOTS = ((-100, 76), (-96, 85), (-90, 90), (-80, 92), (-65, 92), (-50, 95), (-35, 96),
                       (-15, 95), (10, 93), (30, 95), (50, 94), (70, 88), (95, 76))
# Reference half width and depth of the cross-section, for spacing the columns evenly along it.
_REFERENCE_HALF_WIDTH = 70.0
_REFERENCE_DEPTH = 88.0


# -- smooth building blocks ---------------------------------------------------------------------
def monotone_cubic(x: np.ndarray, knots: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Monotone piecewise-cubic (Fritsch-Carlson) interpolation through ``knots``, clamped outside.

    Shape:
        x: any -> same as x.
    """
    kx = np.array([k[0] for k in knots], dtype=np.float64)
    ky = np.array([k[1] for k in knots], dtype=np.float64)
    h = np.diff(kx)
    delta = np.diff(ky) / h
    slopes = np.empty_like(ky)
    slopes[0], slopes[-1] = delta[0], delta[-1]
    same_sign = delta[:-1] * delta[1:] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = 2.0 / (1.0 / delta[:-1] + 1.0 / delta[1:])
    slopes[1:-1] = np.where(same_sign, harmonic, 0.0)
    xc = np.clip(np.asarray(x, dtype=np.float64), kx[0], kx[-1])
    i = np.clip(np.searchsorted(kx, xc) - 1, 0, len(kx) - 2)
    t = (xc - kx[i]) / h[i]
    t2, t3 = t * t, t * t * t
    return ((2 * t3 - 3 * t2 + 1) * ky[i] + (t3 - 2 * t2 + t) * h[i] * slopes[i]
            + (-2 * t3 + 3 * t2) * ky[i + 1] + (t3 - t2) * h[i] * slopes[i + 1])


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """0 below ``edge0``, 1 above ``edge1``, a C1 cubic in between (``edge0 > edge1`` flips it).

    The edges may be arrays; where they coincide the step is sharp (1 from ``edge0`` on).
    """
    x = np.asarray(x, dtype=np.float64)
    width = np.asarray(edge1 - edge0, dtype=np.float64)
    safe = np.where(width == 0, 1.0, width)
    t = np.where(width == 0, (x >= edge0).astype(np.float64), np.clip((x - edge0) / safe, 0.0, 1.0))
    return t * t * (3 - 2 * t)


def gaussian(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """An axis-aligned Gaussian bump of height 1 centred at ``(cx, cy)`` with widths ``(sx, sy)``.

    Shape:
        x, y: broadcastable -> broadcast shape (likewise for the other bumps below).
    """
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def mirrored_gaussian(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """Two Gaussians at ``(±cx, cy)`` (a bilateral feature); exactly symmetric in ``x``."""
    return gaussian(x, y, cx, cy, sx, sy) + gaussian(x, y, -cx, cy, sx, sy)


def compact_bump(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """A C2 bump ``(1 - r²)³`` of height 1, exactly zero outside the ellipse of radii ``(rx, ry)``."""
    r2 = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
    return np.clip(1.0 - r2, 0.0, None) ** 3


# -- outline and depth --------------------------------------------------------------------------
def face_half_width(y: np.ndarray) -> np.ndarray:
    """Half the width of the face outline at height ``y`` (mm). Shape: any -> same."""
    return monotone_cubic(y, _HALF_WIDTH_KNOTS)


def cross_section(s: np.ndarray, exponent: float = LAYOUT.cross_section_exponent) -> np.ndarray:
    """The superellipse cross-section ``(1 - |s|^p)^(1/p)``: 1 at the centre, 0 at the border |s| = 1.

    Shape:
        s: any -> same.
    """
    return np.clip(1.0 - np.abs(s) ** exponent, 0.0, None) ** (1.0 / exponent)


def column_positions(columns: int, exponent: float = LAYOUT.cross_section_exponent) -> np.ndarray:
    """Normalised lateral positions ``s_c`` in [-1, 1], evenly spaced along the cross-section's arc.

    Exactly antisymmetric (``s[c] = -s[columns - 1 - c]``), ``s = 0`` in the middle for odd counts.

    Shape:
        -> (columns,).
    """
    theta = np.linspace(0.0, np.pi / 2, 4001)
    s = np.sin(theta) ** (2.0 / exponent)
    z = np.cos(theta) ** (2.0 / exponent)
    length = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(s) * _REFERENCE_HALF_WIDTH,
                                                       np.diff(z) * _REFERENCE_DEPTH))])
    half = np.linspace(-1.0, 1.0, columns)
    right = np.interp(np.abs(half) * length[-1], length, s)
    return np.where(half < 0, -right, right) * (np.abs(half) > 0)


def eye_lids(x: np.ndarray, layout: FaceLayout = LAYOUT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The eye opening at lateral position ``x`` (either eye).

    Returns:
        ``(xi, upper_y, lower_y)``: ``xi`` in [-1, 1] across the opening from the inner to the outer
        corner (beyond ±1 outside it) and the heights of the upper and lower lid margins.

    Shape:
        x: any -> (same, same, same).
    """
    xi = (np.abs(x) - layout.eye_x) / layout.eye_half_width
    inside = np.clip(1.0 - xi ** 2, 0.0, None)
    corner_y = layout.eye_y + 0.8 * np.clip(xi, -1.0, 1.0)  # outer corner a little higher
    upper = corner_y + layout.upper_lid_height * inside ** 0.7 * (1.0 - 0.12 * xi)
    lower = corner_y - layout.lower_lid_height * inside ** 0.9
    return xi, upper, lower


def eye_opening(x: np.ndarray, y: np.ndarray, layout: FaceLayout = LAYOUT, softness: float = 0.6) -> np.ndarray:
    """A soft 0..1 mask of the visible eyeball between the lids (both eyes).

    Shape:
        x, y: broadcastable -> broadcast shape.
    """
    xi, upper, lower = eye_lids(x, layout)
    across = smoothstep(1.0, 0.9, np.abs(xi))
    return across * smoothstep(-softness, softness, upper - y) * smoothstep(-softness, softness, y - lower)


def lip_borders(x: np.ndarray, layout: FaceLayout = LAYOUT) -> tuple[np.ndarray, np.ndarray]:
    """Heights of the upper and lower vermilion borders at lateral position ``x`` (with cupid's bow).

    Shape:
        x: any -> (same, same).
    """
    across = np.clip(1.0 - (x / layout.mouth_half_width) ** 2, 0.0, None)
    bow = 1.3 * gaussian(np.abs(x), 0.0, 6.0, 0.0, 3.5, 1.0) - 1.0 * gaussian(x, 0.0, 0.0, 0.0, 2.0, 1.0)
    upper = layout.mouth_y + (layout.upper_lip_height * across ** 0.6 + bow * across)
    lower = layout.mouth_y - layout.lower_lip_height * across ** 0.75
    return upper, lower


def surface_depth(x: np.ndarray, y: np.ndarray, layout: FaceLayout = LAYOUT) -> np.ndarray:
    """The depth ``z`` (mm) of the mean face at ``(x, y)``: head shape plus facial features.

    Args:
        x, y: positions on the face (mm); ``|x|`` beyond the outline is clamped to the border.

    Returns:
        ``z`` in mm (+z toward the viewer).

    Shape:
        x, y: broadcastable -> broadcast shape.
    """
    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    s = np.clip(x / face_half_width(y), -1.0, 1.0)
    border = monotone_cubic(y, _BORDER_DEPTH_KNOTS)
    centre = monotone_cubic(y, _CENTRE_DEPTH_KNOTS)
    z = border + (centre - border) * cross_section(s, layout.cross_section_exponent)
    # features fade out toward the border, where the head turns away
    inner = smoothstep(1.0, 0.75, np.abs(s))
    return z + inner * _feature_depth(x, y, layout)


def _feature_depth(x: np.ndarray, y: np.ndarray, layout: FaceLayout) -> np.ndarray:
    """Relief of the facial features over the head shape (mm)."""
    ax = np.abs(x)
    ex, ey = layout.eye_x, layout.eye_y
    relief = np.zeros_like(x)
    # forehead, brow ridge, glabella, temples
    relief += 2.5 * mirrored_gaussian(x, y, 24.0, 62.0, 16.0, 14.0)
    relief += 4.0 * gaussian(x, y, 0.0, layout.brow_y - 1.0, 42.0, 6.0) * smoothstep(60.0, 40.0, ax)
    relief += 2.0 * gaussian(x, y, 0.0, 30.0, 9.0, 7.0)
    relief -= 5.0 * mirrored_gaussian(x, y, 60.0, 38.0, 9.0, 14.0)
    # eye sockets, eyeballs, lid margins and the crease of the upper lid
    relief -= 11.0 * mirrored_gaussian(x, y, ex, ey + 1.0, 12.0, 9.0)
    relief += 8.0 * mirrored_gaussian(x, y, ex, ey, 8.0, 6.5)
    xi, upper, lower = eye_lids(x, layout)
    across = smoothstep(1.15, 0.85, np.abs(xi))
    relief += 1.4 * across * np.exp(-0.5 * ((y - upper - 0.8) / 1.3) ** 2)
    relief += 0.8 * across * np.exp(-0.5 * ((y - lower + 0.6) / 1.2) ** 2)
    relief -= 1.5 * across * np.exp(-0.5 * ((y - upper - 6.0) / 1.6) ** 2)
    relief += 1.0 * eye_opening(x, y, layout)
    # cheeks and cheekbones
    relief += 5.0 * mirrored_gaussian(x, y, 36.0, -10.0, 14.0, 14.0)
    relief += 3.0 * mirrored_gaussian(x, y, 50.0, 6.0, 10.0, 7.0)
    # nose: bridge ridge from the sellion to the tip, rounded tip, nostril wings, base
    relief += nose_depth(x, y, layout)
    # nasolabial folds from the nostril wings toward the mouth corners
    (top_x, top_y), (end_x, end_y) = (layout.ala_x + 5.0, layout.subnasale_y + 4.0), \
        (layout.mouth_half_width + 5.0, layout.mouth_y - 4.0)
    fold_x = top_x + np.clip((y - top_y) / (end_y - top_y), 0.0, 1.0) * (end_x - top_x)
    fold_span = smoothstep(top_y + 4.0, top_y - 2.0, y) * smoothstep(end_y - 10.0, end_y - 2.0, y)
    relief -= 1.6 * np.exp(-0.5 * ((ax - fold_x) / 2.5) ** 2) * fold_span
    # mouth: dental arch, lips, the line where they meet, philtrum, mentolabial sulcus, chin
    my = layout.mouth_y
    relief += 7.0 * gaussian(x, y, 0.0, my + 2.0, 26.0, 20.0)
    upper, lower = lip_borders(x, layout)
    lip_across = smoothstep(1.1, 0.8, ax / layout.mouth_half_width)
    relief += 3.5 * lip_across * np.exp(-0.5 * ((y - (my + 0.55 * (upper - my))) / 3.2) ** 2)
    relief += 4.5 * lip_across * np.exp(-0.5 * ((y - (my + 0.5 * (lower - my))) / 3.8) ** 2)
    relief -= 2.2 * lip_across * np.exp(-0.5 * ((y - my) / 1.4) ** 2)
    relief -= 1.0 * gaussian(x, y, 0.0, 0.5 * (layout.subnasale_y + my + layout.upper_lip_height), 2.8, 6.0)
    relief -= 3.5 * gaussian(x, y, 0.0, my - layout.lower_lip_height - 6.0, 16.0, 4.5)
    relief += 7.0 * gaussian(x, y, 0.0, layout.chin_point_y, 13.0, 9.0)
    return relief


def nose_depth(x: np.ndarray, y: np.ndarray, layout: FaceLayout = LAYOUT) -> np.ndarray:
    """The nose's height over the face (mm): bridge ridge (~5 at the sellion), rounded tip (~29),
    nostril wings.

    Shape:
        x, y: broadcastable -> broadcast shape.
    """
    top, tip, base = layout.sellion_y, layout.nose_tip_y, layout.subnasale_y
    along = np.clip((top - y) / (top - tip), 0.0, 1.0)  # 0 at the sellion, 1 at the tip
    ridge_height = (5.0 + 19.0 * along ** 1.25) * smoothstep(top + 12.0, top, y)
    # below the tip the columella drops steeply to the upper lip
    ridge_height = np.where(y < tip, ridge_height * smoothstep(base - 3.0, tip + 1.0, y) ** 1.2, ridge_height)
    ridge_width = 5.0 + 3.5 * along
    ridge = ridge_height * np.exp(-0.5 * (x / ridge_width) ** 2)
    tip_ball = 5.0 * gaussian(x, y, 0.0, tip - 0.5, 7.0, 5.5)
    wings = 9.0 * mirrored_gaussian(x, y, layout.ala_x, tip - 6.5, 4.5, 4.5)
    return ridge + tip_ball + wings


# -- the grid mesh ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaceGrid:
    """The built-in face mesh: a ``rows x columns`` grid, row-major from the bottom (chin) row.

    Vertex ``(r, c)`` has index ``r * columns + c``; column 0 is the subject's right border
    (``x < 0``), column ``columns - 1`` the left one. The triangles between rows ``mouth_row`` and
    ``mouth_row + 1`` from column ``slit_columns[0]`` to ``slit_columns[1]`` are left out (the mouth
    slit); strictly between those columns the two rows coincide in the mean shape (closed lips).

    Shape:
        vertices: (V, 3); uv: (V, 2); row, column: (V,) int; triangles: (F, 3) int.
    """

    vertices: np.ndarray
    uv: np.ndarray
    row: np.ndarray
    column: np.ndarray
    triangles: np.ndarray
    rows: int
    columns: int
    mouth_row: int
    slit_columns: tuple[int, int]

    def index(self, row: np.ndarray | int, column: np.ndarray | int) -> np.ndarray:
        """Vertex index of grid position ``(row, column)``."""
        return np.asarray(row) * self.columns + np.asarray(column)

    def mirror(self, index: np.ndarray | int) -> np.ndarray:
        """The vertex mirrored across ``x = 0`` (same row, column ``columns - 1 - c``)."""
        index = np.asarray(index)
        return self.index(index // self.columns, self.columns - 1 - index % self.columns)

    @property
    def lower_side(self) -> np.ndarray:
        """(V,) bool: vertices at or below the mouth line's lower row (they move with the jaw)."""
        return self.row <= self.mouth_row


def row_heights(rows: int, layout: FaceLayout = LAYOUT) -> np.ndarray:
    """Heights of the grid rows (bottom to top), denser around the eyes, the nose base and the mouth.

    Shape:
        -> (rows,).
    """
    dense_y = np.linspace(layout.chin_y, layout.top_y, 4001)
    density = (1.0 + 1.3 * gaussian(dense_y, 0.0, layout.eye_y + 2.0, 0.0, 9.0, 1.0)
               + 1.6 * gaussian(dense_y, 0.0, layout.mouth_y, 0.0, 9.0, 1.0)
               + 0.5 * gaussian(dense_y, 0.0, layout.subnasale_y + 4.0, 0.0, 6.0, 1.0))
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(dense_y))])
    return np.interp(np.linspace(0.0, cumulative[-1], rows), cumulative, dense_y)


def build_face_grid(columns: int = 81, rows: int = 81, layout: FaceLayout = LAYOUT,
                    lip_gap_mm: float = 0.1) -> FaceGrid:
    """Build the mean face mesh.

    Args:
        columns: vertices per row (odd, so that a column lies on the midline).
        rows: number of rows.
        layout: feature positions.
        lip_gap_mm: half the gap between the two mouth rows at the slit's corners and beside them,
            where triangles join the rows (inside the slit the lips touch exactly).

    Returns:
        The :class:`FaceGrid` (vertices of the mean shape, uv, triangles, mouth slit).
    """
    if columns < 21 or columns % 2 == 0:
        raise ValueError(f"columns must be odd and at least 21, got {columns}")
    if rows < 21:
        raise ValueError(f"rows must be at least 21, got {rows}")
    s = column_positions(columns, layout.cross_section_exponent)
    nominal_y = row_heights(rows, layout)
    nominal_x = s[None, :] * face_half_width(nominal_y)[:, None]
    mouth_row = int(np.searchsorted(nominal_y, layout.mouth_y) - 1)
    in_slit = np.flatnonzero(np.abs(nominal_x[mouth_row]) < layout.mouth_half_width - 1.0)
    slit_columns = (int(in_slit[0]), int(in_slit[-1]))
    # Pinch the two rows at the mouth line together (closed lips); neighbouring rows follow linearly.
    window = 3
    anchors = [nominal_y[mouth_row - window], nominal_y[mouth_row], nominal_y[mouth_row + 1],
               nominal_y[mouth_row + 1 + window]]
    targets = [anchors[0], layout.mouth_y - lip_gap_mm, layout.mouth_y + lip_gap_mm, anchors[3]]
    pinched_y = np.where((nominal_y > anchors[0]) & (nominal_y < anchors[3]),
                         np.interp(nominal_y, anchors, targets), nominal_y)
    across_mouth = smoothstep(layout.mouth_half_width + 9.0, layout.mouth_half_width + 1.0, np.abs(nominal_x))
    y = nominal_y[:, None] + across_mouth * (pinched_y - nominal_y)[:, None]
    # Inside the slit the lips touch exactly (coincident vertices, no crack to see through); only
    # at and beyond its corners, where triangles join the two rows, do they keep the small gap.
    inside = slice(slit_columns[0] + 1, slit_columns[1])
    y[mouth_row, inside] = y[mouth_row + 1, inside] = layout.mouth_y
    x = s[None, :] * face_half_width(y)
    z = surface_depth(x, y, layout)
    vertices = np.stack([x, y, z], -1).reshape(-1, 3)

    row, column = np.divmod(np.arange(rows * columns), columns)
    uv = np.stack([column / (columns - 1), row / (rows - 1)], -1).astype(np.float64)

    triangles = _grid_triangles(rows, columns, mouth_row, slit_columns)
    return FaceGrid(vertices=vertices, uv=uv, row=row, column=column, triangles=triangles, rows=rows,
                    columns=columns, mouth_row=mouth_row, slit_columns=slit_columns)


def _grid_triangles(rows: int, columns: int, mouth_row: int, slit_columns: tuple[int, int]) -> np.ndarray:
    """Two counter-clockwise triangles per grid quad (mirror-symmetric diagonals), minus the slit.

    Shape:
        -> (F, 3) int64.
    """
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(columns - 1), indexing="ij")
    r, c = r.ravel(), c.ravel()
    keep = ~((r == mouth_row) & (c >= slit_columns[0]) & (c < slit_columns[1]))
    r, c = r[keep], c[keep]
    a = r * columns + c  # bottom left
    b = a + 1            # bottom right
    d = a + columns      # top left
    e = d + 1            # top right
    left_half = (c < (columns - 1) // 2)[:, None]
    first = np.where(left_half, np.stack([a, b, e], 1), np.stack([a, b, d], 1))
    second = np.where(left_half, np.stack([a, e, d], 1), np.stack([b, e, d], 1))
    return np.concatenate([first, second]).astype(np.int64)


# -- albedo -------------------------------------------------------------------------------------
SKIN_RGB = (0.72, 0.55, 0.45)
LIP_RGB = (0.66, 0.36, 0.35)
LIP_LINE_RGB = (0.40, 0.18, 0.18)
BROW_RGB = (0.28, 0.20, 0.15)
SCLERA_RGB = (0.86, 0.84, 0.80)
IRIS_RGB = (0.32, 0.21, 0.13)
PUPIL_RGB = (0.05, 0.04, 0.04)
NOSTRIL_RGB = (0.32, 0.20, 0.17)


BROW_INNER_X = 13.0
BROW_LENGTH = 40.0


def brow_curve(along: np.ndarray, layout: FaceLayout = LAYOUT) -> tuple[np.ndarray, np.ndarray]:
    """The eyebrow's centre line: ``(|x|, y)`` at ``along`` = 0 (inner end) .. 1 (outer end)."""
    along = np.clip(along, 0.0, 1.0)
    return BROW_INNER_X + BROW_LENGTH * along, layout.brow_y + 3.5 * np.sin(np.pi * along ** 0.8) - 1.5 * along


def brow_mask(x: np.ndarray, y: np.ndarray, layout: FaceLayout = LAYOUT) -> np.ndarray:
    """Soft 0..1 mask of both eyebrows (arches above the eyes, thick inside, thin outside)."""
    along = (np.abs(x) - BROW_INNER_X) / BROW_LENGTH
    _, centre_y = brow_curve(along, layout)
    half_thickness = 3.2 - 1.6 * np.clip(along, 0.0, 1.0)
    return (smoothstep(-0.05, 0.05, along) * smoothstep(1.05, 0.95, along)
            * smoothstep(half_thickness + 1.0, half_thickness - 0.5, np.abs(y - centre_y)))


def lip_mask(x: np.ndarray, y: np.ndarray, layout: FaceLayout = LAYOUT) -> np.ndarray:
    """Soft 0..1 mask of the red of the lips (between the vermilion borders)."""
    upper, lower = lip_borders(x, layout)
    return (smoothstep(0.6, -0.6, y - upper) * smoothstep(-0.6, 0.6, y - lower)
            * smoothstep(layout.mouth_half_width + 1.0, layout.mouth_half_width - 2.0, np.abs(x)))


def mean_albedo(vertices: np.ndarray, layout: FaceLayout = LAYOUT) -> np.ndarray:
    """The mean albedo (RGB in [0, 1]): skin, rosier cheeks and nose, lips and the dark line where
    they meet, brows, eyes (sclera, iris, pupil, lashes), nostrils.

    Shape:
        vertices: (V, 3) -> (V, 3).
    """
    x, y = vertices[:, 0], vertices[:, 1]

    def blend(base: np.ndarray, rgb: tuple[float, float, float], weight: np.ndarray) -> np.ndarray:
        return base + weight[:, None] * (np.asarray(rgb) - base)

    albedo = np.broadcast_to(np.asarray(SKIN_RGB), vertices.shape).copy()
    albedo += 0.025 * smoothstep(30.0, 80.0, y)[:, None]  # a slightly paler forehead
    flush = 0.8 * mirrored_gaussian(x, y, 38.0, -10.0, 14.0, 12.0) + 0.5 * gaussian(x, y, 0.0, -14.0, 8.0, 7.0)
    albedo += flush[:, None] * np.array([0.05, -0.02, -0.015])
    albedo = blend(albedo, LIP_RGB, lip_mask(x, y, layout))
    lip_line = np.exp(-0.5 * ((y - layout.mouth_y) / 0.8) ** 2) * smoothstep(
        layout.mouth_half_width + 1.0, layout.mouth_half_width - 3.0, np.abs(x))
    albedo = blend(albedo, LIP_LINE_RGB, 0.7 * lip_line)
    albedo = blend(albedo, BROW_RGB, 0.85 * brow_mask(x, y, layout))
    nostrils = mirrored_gaussian(x, y, 6.5, layout.subnasale_y + 2.5, 3.2, 1.8)
    albedo = blend(albedo, NOSTRIL_RGB, np.clip(1.3 * nostrils, 0.0, 1.0))
    opening = eye_opening(x, y, layout)
    albedo = blend(albedo, SCLERA_RGB, opening)
    iris_r = np.hypot(np.abs(x) - layout.eye_x, y - layout.eye_y - 0.5)
    albedo = blend(albedo, IRIS_RGB, opening * smoothstep(6.0, 5.0, iris_r))
    albedo = blend(albedo, PUPIL_RGB, opening * smoothstep(2.6, 1.8, iris_r))
    xi, upper, _ = eye_lids(x, layout)
    lashes = smoothstep(1.1, 0.9, np.abs(xi)) * np.exp(-0.5 * ((y - upper - 0.3) / 0.9) ** 2)
    albedo = blend(albedo, BROW_RGB, 0.8 * lashes)
    return np.clip(albedo, 0.0, 1.0)


# -- landmarks and contour lines ----------------------------------------------------------------
IBUG_MIRROR = np.array([16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
                        26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
                        27, 28, 29, 30, 35, 34, 33, 32, 31,
                        45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
                        54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
                        64, 63, 62, 61, 60, 67, 66, 65])
"""``IBUG_MIRROR[k]``: the iBUG-68 landmark that is the mirror image of landmark ``k``."""

JAW_TOP_BELOW_EYE_MM = 5.0
CONTOUR_INNER_S = 0.12


def ibug_landmarks(grid: FaceGrid, layout: FaceLayout = LAYOUT) -> np.ndarray:
    """The vertex of each iBUG-68 landmark (0-based landmark order), exactly mirror-symmetric.

    Landmarks of the subject's right side (``x < 0``) and the midline are placed at the vertex
    nearest to their anatomical position; the left side is their mirror image. Jaw landmarks 0-7
    lie on the outline (column 0), evenly spaced along it from just below the eye to the chin (8,
    bottom row); the inner lip landmarks lie on the two rows of the mouth slit (61-63 on the upper
    lip, 65-67 on the lower lip) so that they separate when the mouth opens.

    Shape:
        -> (68,) int64.
    """
    x, y = grid.vertices[:, 0], grid.vertices[:, 1]
    centre = (grid.columns - 1) // 2
    landmarks = np.full(68, -1, dtype=np.int64)

    def nearest(target_x: float, target_y: float, candidates: np.ndarray) -> int:
        candidates = np.asarray(candidates)
        return int(candidates[np.argmin((x[candidates] - target_x) ** 2 + (y[candidates] - target_y) ** 2)])

    right_half = np.flatnonzero(grid.column < centre)
    midline = np.flatnonzero(grid.column == centre)

    # jaw: evenly spaced along the right outline (frontal view) down to the chin
    outline = grid.index(np.arange(grid.rows), 0)
    top_row = int(np.searchsorted(y[outline], layout.eye_y - JAW_TOP_BELOW_EYE_MM))
    path = np.concatenate([outline[top_row::-1], grid.index(0, np.arange(1, centre + 1))])
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x[path]), np.diff(y[path])))])
    on_column = top_row + 1
    for k in range(8):
        position = int(np.argmin(np.abs(arc[:on_column] - arc[-1] * k / 8)))
        landmarks[k] = path[position]
    landmarks[8] = grid.index(0, centre)

    # eyebrows 17-21 (outer -> inner)
    for k, along in zip(range(17, 22), (1.0, 0.75, 0.5, 0.25, 0.0)):
        bx, by = brow_curve(np.array(along), layout)
        landmarks[k] = nearest(-float(bx), float(by), right_half)

    # nose bridge 27-29 and tip 30 (the most prominent midline vertex)
    for k, bridge_y in zip((27, 28, 29), (layout.eye_y, layout.eye_y - 12.0, layout.eye_y - 24.0)):
        landmarks[k] = nearest(0.0, bridge_y, midline)
    landmarks[30] = int(midline[np.argmax(grid.vertices[midline, 2])])
    # nostril base 31-33
    landmarks[31] = nearest(-layout.ala_x + 2.0, layout.subnasale_y + 4.0, right_half)
    landmarks[32] = nearest(-layout.ala_x / 2, layout.subnasale_y + 1.5, right_half)
    landmarks[33] = nearest(0.0, layout.subnasale_y, midline)

    # right eye 36-41: outer corner, upper lid (two), inner corner, lower lid (two)
    for k, xi, where in ((36, 1.0, "corner"), (37, 0.35, "upper"), (38, -0.35, "upper"), (39, -1.0, "corner"),
                         (40, -0.35, "lower"), (41, 0.35, "lower")):
        ex = np.array(layout.eye_x + xi * layout.eye_half_width)
        _, upper, lower = eye_lids(ex, layout)
        ey = {"corner": 0.5 * (upper + lower), "upper": upper, "lower": lower}[where]
        landmarks[k] = nearest(-float(ex), float(ey), right_half)

    # outer lip 48-51 (corner, upper border to the midline) and 57-59 (lower border)
    upper_row = grid.mouth_row + 1
    lower_row = grid.mouth_row
    first_slit, _ = grid.slit_columns
    landmarks[48] = int(grid.index(upper_row, first_slit - 1))
    for k, lip_x in ((49, -15.0), (50, -6.0), (51, 0.0)):
        upper, _ = lip_borders(np.array(lip_x), layout)
        landmarks[k] = nearest(lip_x, float(upper), midline if lip_x == 0 else right_half)
    for k, lip_x in ((57, 0.0), (58, -7.0), (59, -15.0)):
        _, lower = lip_borders(np.array(lip_x), layout)
        landmarks[k] = nearest(lip_x, float(lower), midline if lip_x == 0 else right_half)
    # inner lip: 60 at the slit's corner, 61-62 on the upper row, 66-67 on the lower row
    landmarks[60] = int(grid.index(upper_row, first_slit))
    upper_candidates = grid.index(upper_row, np.arange(first_slit + 1, centre + 1))
    lower_candidates = grid.index(lower_row, np.arange(first_slit + 1, centre + 1))
    inner_x = 0.5 * layout.mouth_half_width
    landmarks[61] = nearest(-inner_x, layout.mouth_y, upper_candidates)
    landmarks[62] = int(grid.index(upper_row, centre))
    landmarks[66] = int(grid.index(lower_row, centre))
    landmarks[67] = nearest(-inner_x, layout.mouth_y, lower_candidates)

    # the subject's left side is the mirror image of the right side
    source = landmarks[IBUG_MIRROR]
    fill = (landmarks < 0) & (source >= 0)
    landmarks[fill] = grid.mirror(source[fill])
    if np.any(landmarks < 0):
        raise RuntimeError(f"landmarks left undefined: {np.flatnonzero(landmarks < 0).tolist()}")
    return landmarks


def jaw_contour_lines(grid: FaceGrid, landmarks: np.ndarray,
                      inner_s: float = CONTOUR_INNER_S) -> tuple[np.ndarray, np.ndarray]:
    """Contour lines of the jaw landmarks 0-7 and 9-16 (the chin, 8, does not march).

    Each line is the landmark's grid row from ``|s| = inner_s`` on the cheek out to the border
    column, ordered from the face centre outwards; all lines have the same length.

    Returns:
        ``(contour_landmarks, contour_lines)``.

    Shape:
        landmarks: (68,) -> (16,), (16, K).
    """
    s = column_positions(grid.columns)
    outward = np.flatnonzero(s <= -inner_s)[::-1]  # right side, from the cheek to column 0
    contour_landmarks = np.array([k for k in range(17) if k != 8], dtype=np.int64)
    lines = []
    for k in contour_landmarks:
        row = int(grid.row[landmarks[k]])
        columns = outward if k < 8 else grid.columns - 1 - outward
        lines.append(grid.index(row, columns))
    return contour_landmarks, np.stack(lines).astype(np.int64)
