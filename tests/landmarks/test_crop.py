import pytest
import torch

from diffface.camera import perspective_project
from diffface.landmarks import FaceCropper, boxes_from_landmarks, crop_faces, crop_transform, square_boxes


def ramp_images(batch, height, width, dtype=torch.float64):
    """Channel 0 = u (column), channel 1 = v (row), channel 2 = 1: bilinear sampling reproduces them exactly."""
    v, u = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
    return torch.stack([u, v, torch.ones_like(u)])[None].repeat(batch, 1, 1, 1)


def test_crop_pixels_come_from_where_the_transform_says():
    images = ramp_images(2, 60, 80)
    boxes = torch.tensor([[10.0, 5.0, 50.0, 45.0], [30.3, 12.7, 62.1, 44.5]], dtype=torch.float64)
    crops, tf = crop_faces(images, boxes, size=24)
    assert crops.shape == (2, 3, 24, 24)
    rows, cols = torch.meshgrid(torch.arange(24.0, dtype=torch.float64), torch.arange(24.0, dtype=torch.float64),
                                indexing="ij")
    crop_points = torch.stack([cols, rows], -1).reshape(1, -1, 2).repeat(2, 1, 1)
    source = tf.invert_points(crop_points)                          # where each crop pixel was sampled
    torch.testing.assert_close(crops[:, :2].permute(0, 2, 3, 1).reshape(2, -1, 2), source)
    # box edges land on the crop's outer pixel edges
    torch.testing.assert_close(tf.apply_points(boxes.view(2, 2, 2)),
                               torch.tensor([[-0.5, -0.5], [23.5, 23.5]], dtype=torch.float64).expand(2, 2, 2))


def test_landmarks_move_exactly_with_the_crop():
    images = ramp_images(1, 100, 100)
    landmarks = torch.tensor([[[30.25, 40.5], [61.75, 70.125], [45.0, 52.0]]], dtype=torch.float64)
    crops, tf = FaceCropper(size=32, scale=1.5)(images, landmarks=landmarks)
    moved = tf.apply_points(landmarks)
    # sample the crop (a ramp of source coordinates) at the moved landmarks: we get the landmarks back
    grid = (moved / 31 * 2 - 1)[:, :, None, :]
    sampled = torch.nn.functional.grid_sample(crops[:, :2], grid, align_corners=True)[..., 0].transpose(1, 2)
    torch.testing.assert_close(sampled, landmarks)
    torch.testing.assert_close(tf.invert_points(moved), landmarks)


def test_intrinsics_and_camera_move_with_the_crop():
    torch.manual_seed(0)
    points = torch.randn(2, 10, 3, dtype=torch.float64) * 50
    angles = torch.randn(2, 3, dtype=torch.float64) * 0.2
    translation = torch.tensor([[0.0, 0.0, 900.0]] * 2, dtype=torch.float64)
    focal = torch.tensor([[800.0], [1000.0]], dtype=torch.float64)
    centre = torch.tensor([[320.0, 240.0], [300.0, 260.0]], dtype=torch.float64)
    uv, _ = perspective_project(points, angles, translation, focal, centre)
    tf = crop_transform(torch.tensor([[200.0, 100.0, 440.0, 340.0], [150.0, 180.0, 350.0, 380.0]],
                                     dtype=torch.float64), 96)
    new_focal, new_centre = tf.apply_camera(focal, centre)
    uv_crop, _ = perspective_project(points, angles, translation, new_focal, new_centre)
    torch.testing.assert_close(uv_crop, tf.apply_points(uv))
    K = torch.zeros(2, 3, 3, dtype=torch.float64)
    K[:, 0, 0], K[:, 1, 1], K[:, 2, 2] = focal[:, 0], focal[:, 0], 1
    K[:, :2, 2] = centre
    K_crop = tf.apply_intrinsics(K)
    torch.testing.assert_close(K_crop[:, 0, 0:1], new_focal)
    torch.testing.assert_close(K_crop[:, :2, 2], new_centre)


def test_boxes():
    landmarks = torch.tensor([[[0.0, 0.0], [10.0, 4.0], [float("nan"), 99.0]]])
    torch.testing.assert_close(boxes_from_landmarks(landmarks, scale=2.0), torch.tensor([[-5.0, -8.0, 15.0, 12.0]]))
    torch.testing.assert_close(square_boxes(torch.tensor([[0.0, 0.0, 4.0, 2.0]])), torch.tensor([[0.0, -1.0, 4.0, 3.0]]))


def test_gradcheck_images_and_boxes():
    images = torch.rand(1, 2, 12, 14, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[2.3, 1.7, 10.1, 9.5]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda im, b: crop_faces(im, b, size=6)[0], (images, boxes))


def test_bad_input():
    images = torch.rand(1, 3, 10, 10)
    with pytest.raises(ValueError, match="boxes"):
        crop_faces(images, torch.tensor([[5.0, 5.0, 5.0, 5.0]]), 8)
    with pytest.raises(ValueError, match="boxes"):
        crop_faces(images, torch.tensor([[0.0, float("nan"), 5.0, 5.0]]), 8)
    with pytest.raises(TypeError, match="floating"):
        crop_faces(torch.zeros(1, 3, 10, 10, dtype=torch.uint8), torch.tensor([[0.0, 0.0, 5.0, 5.0]]), 8)
    with pytest.raises(ValueError, match="no finite landmark"):
        boxes_from_landmarks(torch.full((1, 68, 2), float("nan")))
    with pytest.raises(ValueError, match="exactly one"):
        FaceCropper()(images)
