import math

import numpy as np
import pytest
import torch

from diffface.camera import (PerspectiveCamera, euler_to_rotation, from_opencv, intrinsic_matrix,
                             perspective_project, project_points, rotation_to_euler, to_opencv, world_to_camera)


def _reference_project(points, angles, t, f, pp):
    """Float64 numpy reference written straight from the method's definition."""
    out = []
    for b in range(points.shape[0]):
        phi, gamma, theta = angles[b]
        rx = np.array([[1, 0, 0], [0, math.cos(phi), -math.sin(phi)], [0, math.sin(phi), math.cos(phi)]])
        ry = np.array([[math.cos(gamma), 0, math.sin(gamma)], [0, 1, 0], [-math.sin(gamma), 0, math.cos(gamma)]])
        rz = np.array([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
        flip = np.diag([1.0, -1.0, -1.0])
        cam = (flip @ rz @ ry @ rx @ points[b].T).T + t[b]
        Pi = np.array([[f[b, 0], 0, pp[b, 0]], [0, f[b, 0], pp[b, 1]], [0, 0, 1]])
        h = (Pi @ cam.T).T
        out.append(h[:, :2] / h[:, 2:3])
    return np.stack(out)


def _random_camera(B, generator, dtype=torch.float64):
    angles = (torch.rand(B, 3, generator=generator, dtype=dtype) - 0.5) * 1.6
    t = torch.randn(B, 3, generator=generator, dtype=dtype) * 10 + torch.tensor([0, 0, 600.0], dtype=dtype)
    f = 500 + 500 * torch.rand(B, 1, generator=generator, dtype=dtype)
    pp = 100 + 20 * torch.rand(B, 2, generator=generator, dtype=dtype)
    return angles, t, f, pp


def test_projection_matches_float64_reference(dtype):
    g = torch.Generator().manual_seed(0)
    points = torch.randn(4, 50, 3, generator=g, dtype=torch.float64) * 60
    angles, t, f, pp = _random_camera(4, g)
    ref = _reference_project(points.numpy(), angles.numpy(), t.numpy(), f.numpy(), pp.numpy())
    uv, depth = perspective_project(*(x.to(dtype) for x in (points, angles, t, f, pp)))
    tol = 1e-9 if dtype == torch.float64 else 2e-3
    np.testing.assert_allclose(uv.double().numpy(), ref, atol=tol, rtol=0)
    assert uv.shape == (4, 50, 2) and depth.shape == (4, 50)


def test_zero_angles_show_face_frontally():
    # nose (+z in model space) comes toward the camera: smaller depth than the back of the head
    points = torch.tensor([[[0.0, 0, 30], [0, 0, -100], [50, 0, 0], [0, 50, 0]]])
    uv, depth = perspective_project(points, torch.zeros(1, 3), torch.tensor([[0, 0, 500.0]]),
                                    torch.tensor([[1000.0]]), torch.tensor([[100.0, 100.0]]))
    assert depth[0, 0] < depth[0, 1]
    assert uv[0, 2, 0] > 100  # +x model -> image right
    assert uv[0, 3, 1] < 100  # +y model (up) -> image up (smaller v)


def test_positive_yaw_turns_nose_to_image_right():
    nose = torch.tensor([[[0.0, 0, 30]]])
    uv, _ = perspective_project(nose, torch.tensor([[0, 0.5, 0]]), torch.tensor([[0, 0, 500.0]]),
                                torch.tensor([[1000.0]]), torch.tensor([[0.0, 0.0]]))
    assert uv[0, 0, 0] > 0


def test_rotation_is_orthonormal_and_euler_roundtrip():
    g = torch.Generator().manual_seed(1)
    angles = (torch.rand(100, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([6.0, 3.0, 6.0],
                                                                                          dtype=torch.float64)
    R = euler_to_rotation(angles)
    eye = torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(100, dtype=torch.float64))
    torch.testing.assert_close(euler_to_rotation(rotation_to_euler(R)), R, atol=1e-10, rtol=0)


def test_rotation_to_euler_gimbal_lock():
    R = euler_to_rotation(torch.tensor([[0.3, math.pi / 2, 0.2]], dtype=torch.float64))
    torch.testing.assert_close(euler_to_rotation(rotation_to_euler(R)), R, atol=1e-6, rtol=0)


def test_opencv_roundtrip_and_same_pixels():
    g = torch.Generator().manual_seed(2)
    points = torch.randn(3, 20, 3, generator=g, dtype=torch.float64) * 50
    angles, t, f, pp = _random_camera(3, g)
    K, R, tvec = to_opencv(angles, t, f, pp)
    cam = points @ R.transpose(1, 2) + tvec[:, None]
    h = cam @ K.transpose(1, 2)
    uv_cv = h[..., :2] / h[..., 2:]
    uv, _ = perspective_project(points, angles, t, f, pp)
    torch.testing.assert_close(uv, uv_cv)
    angles2, t2, f2, pp2 = from_opencv(K, R, tvec[..., None])
    torch.testing.assert_close(euler_to_rotation(angles2), euler_to_rotation(angles))
    torch.testing.assert_close((t2, f2, pp2), (t, f, pp))


def test_from_opencv_rejects_unequal_focal():
    K = torch.tensor([[[800.0, 0, 100], [0, 700, 100], [0, 0, 1]]])
    with pytest.raises(ValueError, match="fx == fy"):
        from_opencv(K, torch.eye(3)[None], torch.zeros(1, 3))


def test_intrinsic_matrix_is_pi():
    K = intrinsic_matrix(torch.tensor([[900.0]]), torch.tensor([[48.0, 50.0]]))
    torch.testing.assert_close(K[0], torch.tensor([[900.0, 0, 48], [0, 900, 50], [0, 0, 1]]))


def test_gradcheck_projection():
    g = torch.Generator().manual_seed(3)
    points = (torch.randn(2, 5, 3, generator=g, dtype=torch.float64) * 50).requires_grad_()
    angles, t, f, pp = (x.requires_grad_() for x in _random_camera(2, g))
    assert torch.autograd.gradcheck(lambda *a: perspective_project(*a)[0], (points, angles, t, f, pp))


def test_bad_shapes_name_the_tensor():
    with pytest.raises(ValueError, match="angles"):
        world_to_camera(torch.zeros(1, 4, 3), torch.zeros(1, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="focal"):
        project_points(torch.ones(1, 4, 3), torch.ones(1), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="points"):
        world_to_camera(torch.zeros(4, 3), torch.zeros(1, 3), torch.zeros(1, 3))


def test_camera_module_overrides(device):
    cam = PerspectiveCamera(angles=torch.zeros(1, 3, device=device), translation=torch.tensor([[0, 0, 500.0]], device=device),
                            focal=torch.tensor([[1000.0]], device=device), principal_point=torch.zeros(1, 2, device=device))
    pts = torch.tensor([[[10.0, 0, 0]]], device=device)
    uv1, _ = cam(pts)
    uv2, _ = cam(pts, focal=torch.tensor([[2000.0]], device=device))
    torch.testing.assert_close(uv2, uv1 * 2)
    with pytest.raises(ValueError, match="focal"):
        PerspectiveCamera()(pts, angles=torch.zeros(1, 3), translation=torch.zeros(1, 3))


def test_rotation_jacobian_matches_autograd():
    from diffface.camera import euler_to_rotation_jacobian

    angles = torch.randn(4, 3, dtype=torch.float64)
    auto = torch.autograd.functional.jacobian(lambda a: euler_to_rotation(a), angles)  # (4,3,3,4,3)
    auto = torch.stack([auto[b, :, :, b, :] for b in range(4)]).permute(0, 3, 1, 2)
    torch.testing.assert_close(euler_to_rotation_jacobian(angles), auto)
