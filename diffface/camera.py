"""The method's perspective camera: rotation from three angles, translation, and
``Π = [[f, 0, Px], [0, f, Py], [0, 0, 1]]`` with ``u = x/z``, ``v = y/z``.

Conventions
-----------
* Model space: +x toward the subject's left (image right), +y up, +z out of the face.
* Camera space is OpenCV's: +x right, +y down, +z forward (into the scene), so pixel
  coordinates come straight out of ``Π`` (origin at the top-left pixel corner's centre, as in
  OpenCV).
* A point ``X`` of the model goes to the camera as ``X_cam = F · R(φ, γ, θ) · X + t`` with
  ``F = diag(1, -1, -1)`` (turns model space into camera space so that zero angles show the
  face frontally) and ``R = Rz(θ) · Ry(γ) · Rx(φ)``: first pitch ``φ`` about x, then yaw ``γ``
  about y, then roll ``θ`` about z, all in the model frame, right-handed, radians. Positive yaw
  turns the nose toward image right; positive pitch turns it up; positive roll turns the face
  counter-clockwise as seen in the image.
* Then ``[x', y', z'] = Π · X_cam`` and ``(u, v) = (x'/z', y'/z')``, i.e. ``u = f·x/z + Px``.
* OpenCV extrinsics are ``R_cv = F · R``, ``t_cv = t`` and intrinsics ``K = Π``.
"""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_shape
from .geometry import rotate_points

MODEL_TO_CAMERA_FLIP = (1.0, -1.0, -1.0)


def model_to_camera_flip(like: torch.Tensor) -> torch.Tensor:
    """:data:`MODEL_TO_CAMERA_FLIP` as a tensor of ``like``'s dtype and device. Shape: -> (3,)."""
    return torch.tensor(MODEL_TO_CAMERA_FLIP, dtype=like.dtype, device=like.device)


def euler_to_rotation(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``Rz(θ) · Ry(γ) · Rx(φ)`` from angles ``(φ, γ, θ)`` in radians.

    Shape:
        angles: (*, 3) -> (*, 3, 3).

    Example:
        >>> euler_to_rotation(torch.zeros(1, 3))
        tensor([[[1., 0., 0.],
                 [0., 1., 0.],
                 [0., 0., 1.]]])
    """
    check_shape(angles, ["*", 3], "angles")
    phi, gamma, theta = angles.unbind(-1)
    cp, sp = phi.cos(), phi.sin()
    cg, sg = gamma.cos(), gamma.sin()
    ct, st = theta.cos(), theta.sin()
    row0 = torch.stack([ct * cg, ct * sg * sp - st * cp, ct * sg * cp + st * sp], -1)
    row1 = torch.stack([st * cg, st * sg * sp + ct * cp, st * sg * cp - ct * sp], -1)
    row2 = torch.stack([-sg, cg * sp, cg * cp], -1)
    return torch.stack([row0, row1, row2], -2)


def euler_to_rotation_jacobian(angles: torch.Tensor) -> torch.Tensor:
    """Derivatives of :func:`euler_to_rotation` with respect to ``(φ, γ, θ)``.

    Returns ``J`` with ``J[..., k, :, :] = ∂R / ∂angles[k]`` (used by analytic Gauss–Newton fitting).

    Shape:
        angles: (*, 3) -> (*, 3, 3, 3).
    """
    check_shape(angles, ["*", 3], "angles")
    phi, gamma, theta = angles.unbind(-1)
    zero, one = torch.zeros_like(phi), torch.ones_like(phi)

    def mat(rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    cp, sp, cg, sg, ct, st = phi.cos(), phi.sin(), gamma.cos(), gamma.sin(), theta.cos(), theta.sin()
    rx = mat([[one, zero, zero], [zero, cp, -sp], [zero, sp, cp]])
    ry = mat([[cg, zero, sg], [zero, one, zero], [-sg, zero, cg]])
    rz = mat([[ct, -st, zero], [st, ct, zero], [zero, zero, one]])
    drx = mat([[zero, zero, zero], [zero, -sp, -cp], [zero, cp, -sp]])
    dry = mat([[-sg, zero, cg], [zero, zero, zero], [-cg, zero, -sg]])
    drz = mat([[-st, -ct, zero], [ct, -st, zero], [zero, zero, zero]])
    return torch.stack([rz @ ry @ drx, rz @ dry @ rx, drz @ ry @ rx], -3)


def rotation_to_euler(rotation: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`euler_to_rotation`, with yaw ``γ`` in [-π/2, π/2].

    At gimbal lock (|γ| = π/2) roll is set to zero and pitch absorbs the rotation.

    Shape:
        rotation: (*, 3, 3) -> (*, 3).
    """
    check_shape(rotation, ["*", 3, 3], "rotation")
    r00, r10, r20 = rotation[..., 0, 0], rotation[..., 1, 0], rotation[..., 2, 0]
    r21, r22 = rotation[..., 2, 1], rotation[..., 2, 2]
    cos_gamma = torch.sqrt(r00 * r00 + r10 * r10)
    gamma = torch.atan2(-r20, cos_gamma)
    locked = cos_gamma < 1e-6
    phi = torch.where(locked, torch.atan2(-rotation[..., 1, 2], rotation[..., 1, 1]), torch.atan2(r21, r22))
    theta = torch.where(locked, torch.zeros_like(gamma), torch.atan2(r10, r00))
    return torch.stack([phi, gamma, theta], -1)


def intrinsic_matrix(focal: torch.Tensor, principal_point: torch.Tensor) -> torch.Tensor:
    """The method's ``Π = [[f, 0, Px], [0, f, Py], [0, 0, 1]]`` (equal to OpenCV's ``K``).

    Shape:
        focal: (B, 1); principal_point: (B, 2) -> (B, 3, 3).
    """
    check_shape(focal, ["B", 1], "focal")
    check_shape(principal_point, ["B", 2], "principal_point")
    zero, one = torch.zeros_like(focal[:, 0]), torch.ones_like(focal[:, 0])
    f, px, py = focal[:, 0], principal_point[:, 0], principal_point[:, 1]
    return torch.stack([
        torch.stack([f, zero, px], -1),
        torch.stack([zero, f, py], -1),
        torch.stack([zero, zero, one], -1),
    ], -2)


def world_to_camera(points: torch.Tensor, angles: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Model-space points to OpenCV camera space: ``F · R(angles) · X + t``.

    Shape:
        points: (B, N, 3); angles: (B, 3); translation: (B, 3) -> (B, N, 3).
    """
    check_shape(points, ["B", "N", 3], "points")
    check_shape(angles, ["B", 3], "angles")
    check_shape(translation, ["B", 3], "translation")
    rotation = euler_to_rotation(angles) * model_to_camera_flip(points)[:, None]  # rows scaled: F · R
    return rotate_points(points, rotation) + translation[:, None, :]


def project_points(points_camera: torch.Tensor, focal: torch.Tensor, principal_point: torch.Tensor,
                   eps: float = 1e-8) -> torch.Tensor:
    """Apply ``Π`` and divide by depth: ``u = f·x/z + Px``, ``v = f·y/z + Py``.

    Points with ``z`` closer to zero than ``eps`` are divided by ``eps`` (keeps gradients finite).

    Shape:
        points_camera: (B, N, 3); focal: (B, 1); principal_point: (B, 2) -> (B, N, 2).
    """
    check_shape(points_camera, ["B", "N", 3], "points_camera")
    check_shape(focal, ["B", 1], "focal")
    check_shape(principal_point, ["B", 2], "principal_point")
    z = points_camera[..., 2:3]
    z = torch.where(z.abs() < eps, torch.full_like(z, eps), z)
    return focal[:, None, :] * points_camera[..., :2] / z + principal_point[:, None, :]


def perspective_project(points: torch.Tensor, angles: torch.Tensor, translation: torch.Tensor,
                        focal: torch.Tensor, principal_point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-space points to pixels and camera depth.

    Returns:
        ``(uv, depth)``: pixel coordinates and camera-space ``z``.

    Shape:
        points: (B, N, 3); angles, translation: (B, 3); focal: (B, 1); principal_point: (B, 2)
        -> uv (B, N, 2), depth (B, N).

    Example:
        >>> uv, z = perspective_project(torch.zeros(1, 1, 3), torch.zeros(1, 3),
        ...     torch.tensor([[0., 0., 500.]]), torch.tensor([[800.]]), torch.tensor([[112., 112.]]))
        >>> uv
        tensor([[[112., 112.]]])
    """
    cam = world_to_camera(points, angles, translation)
    return project_points(cam, focal, principal_point), cam[..., 2]


def to_opencv(angles: torch.Tensor, translation: torch.Tensor, focal: torch.Tensor,
              principal_point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Our camera as OpenCV ``(K, R, tvec)`` so that ``K (R X + t)`` gives the same pixels.

    Shape:
        angles, translation: (B, 3); focal: (B, 1); principal_point: (B, 2)
        -> K (B, 3, 3), R (B, 3, 3), tvec (B, 3).
    """
    rotation = euler_to_rotation(angles) * model_to_camera_flip(angles)[:, None]
    return intrinsic_matrix(focal, principal_point), rotation, translation.clone()


def from_opencv(K: torch.Tensor, R: torch.Tensor, tvec: torch.Tensor,
                atol_px: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV ``(K, R, tvec)`` to ``(angles, translation, focal, principal_point)``.

    The method's camera has one focal length and no skew: ``K`` with ``|fx - fy|`` or skew above
    ``atol_px`` raises ``ValueError`` rather than silently changing the projection.

    Shape:
        K, R: (B, 3, 3); tvec: (B, 3) or (B, 3, 1) -> angles (B, 3), translation (B, 3),
        focal (B, 1), principal_point (B, 2).
    """
    check_shape(K, ["B", 3, 3], "K")
    check_shape(R, ["B", 3, 3], "R")
    tvec = tvec.reshape(tvec.shape[0], 3)
    fx, fy, skew = K[:, 0, 0], K[:, 1, 1], K[:, 0, 1]
    if (fx - fy).abs().max() > atol_px or skew.abs().max() > atol_px:
        raise ValueError("K must have fx == fy and zero skew for the method's camera "
                         f"(got fx={fx.tolist()}, fy={fy.tolist()}, skew={skew.tolist()})")
    rotation = R * model_to_camera_flip(R)[:, None]  # F is its own inverse
    return rotation_to_euler(rotation), tvec.clone(), fx[:, None].clone(), K[:, :2, 2].clone()


class PerspectiveCamera(nn.Module):
    """The method's camera as a module; parameters set at construction, overridable per call.

    Args:
        angles: (B, 3) radians; translation: (B, 3) mm; focal: (B, 1) px;
            principal_point: (B, 2) px. Any may be left ``None`` and given per call.

    Shape:
        forward(points (B, N, 3), **overrides) -> uv (B, N, 2), depth (B, N).

    Example:
        >>> cam = PerspectiveCamera(focal=torch.tensor([[800.]]), principal_point=torch.tensor([[112., 112.]]))
        >>> uv, depth = cam(torch.zeros(1, 5, 3), angles=torch.zeros(1, 3),
        ...                 translation=torch.tensor([[0., 0., 600.]]))
    """

    def __init__(self, angles: torch.Tensor | None = None, translation: torch.Tensor | None = None,
                 focal: torch.Tensor | None = None, principal_point: torch.Tensor | None = None):
        super().__init__()
        self.angles, self.translation = angles, translation
        self.focal, self.principal_point = focal, principal_point

    def _resolve(self, **overrides) -> dict[str, torch.Tensor]:
        out = {}
        for name in ("angles", "translation", "focal", "principal_point"):
            value = overrides.get(name)
            value = getattr(self, name) if value is None else value
            if value is None:
                raise ValueError(f"camera parameter '{name}' is set neither at construction nor in the call")
            out[name] = value
        return out

    def forward(self, points: torch.Tensor, **overrides) -> tuple[torch.Tensor, torch.Tensor]:
        p = self._resolve(**overrides)
        return perspective_project(points, p["angles"], p["translation"], p["focal"], p["principal_point"])

    def world_to_camera(self, points: torch.Tensor, **overrides) -> torch.Tensor:
        p = self._resolve(**overrides)
        return world_to_camera(points, p["angles"], p["translation"])

    def intrinsics(self, **overrides) -> torch.Tensor:
        p = self._resolve(**overrides)
        return intrinsic_matrix(p["focal"], p["principal_point"])
