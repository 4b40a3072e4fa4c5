
import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from diffface.builtin_expressions import EXPRESSION_NAMES, EXPRESSION_STD_MM
from diffface.builtin_geometry import IBUG_MIRROR, LAYOUT, build_face_grid
from diffface.builtin_model import BuiltinModelConfig, build_builtin_model
from diffface.camera import perspective_project
from diffface.landmark_marching import march_contour_landmarks
from diffface.model_format import load_model_npz, save_model_npz
from diffface.morphable_model import load_morphable_model

ARRAYS = ("mean_shape", "id_basis", "id_std", "exp_basis", "exp_std", "albedo_mean", "albedo_basis",
          "albedo_std", "triangles", "uv", "landmark_indices", "contour_landmarks", "contour_lines")


@pytest.fixture(scope="module")
def model():
    return build_builtin_model()


def face_normals(vertices, triangles):
    v0, v1, v2 = (vertices[triangles[:, i]] for i in range(3))
    return np.cross(v1 - v0, v2 - v0)


def expression(model, name):
    """The displacement (V, 3) of expression ``name`` at +1σ."""
    k = list(model.metadata["expression_names"]).index(name)
    return model.exp_basis[:, :, k] * model.exp_std[k]


def mirror_vertex(model, index):
    columns = model.metadata["grid"]["columns"]
    index = np.asarray(index)
    return (index // columns) * columns + (columns - 1 - index % columns)


# -- format, sizes, configuration -----------------------------------------------------------------
def test_default_model_is_valid_with_expected_sizes(model):
    model.validate()
    assert model.num_vertices >= 5000
    assert (model.id_dims, model.exp_dims, model.tex_dims) == (80, 29, 80)
    assert model.num_landmarks == 68 and model.has_albedo
    assert model.name == "builtin" and model.source == "diffface procedural v1"
    assert "synthetic" in model.license.lower() and "real people" in model.license
    assert model.metadata["config"] == {"grid_columns": 81, "grid_rows": 81, "id_modes": 80,
                                        "exp_modes": 29, "albedo_modes": 80, "seed": 0}
    assert model.metadata["expression_names"] == list(EXPRESSION_NAMES)
    np.testing.assert_allclose(model.exp_std, [EXPRESSION_STD_MM[n] for n in EXPRESSION_NAMES], rtol=1e-6)


def test_config_changes_dimensions_and_keeps_leading_modes(model):
    small = build_builtin_model(BuiltinModelConfig(id_modes=30, exp_modes=5, albedo_modes=12))
    assert (small.id_dims, small.exp_dims, small.tex_dims) == (30, 5, 12)
    assert small.metadata["expression_names"] == list(EXPRESSION_NAMES[:5])
    np.testing.assert_allclose(small.id_basis, model.id_basis[:, :, :30], atol=1e-6)
    np.testing.assert_allclose(small.albedo_basis, model.albedo_basis[:, :, :12], atol=1e-6)
    np.testing.assert_array_equal(small.albedo_std, model.albedo_std[:12])
    coarse = build_builtin_model(BuiltinModelConfig(grid_columns=41, grid_rows=51, id_modes=3, exp_modes=0,
                                                    albedo_modes=0))
    coarse.validate()
    assert coarse.num_vertices == 41 * 51 and coarse.exp_basis.shape == (41 * 51, 3, 0)
    assert coarse.albedo_basis.shape == (41 * 51, 3, 0)


@pytest.mark.parametrize("bad", [dict(exp_modes=30), dict(id_modes=-1), dict(albedo_modes=-2)])
def test_bad_mode_counts_raise(bad):
    with pytest.raises(ValueError, match="modes"):
        BuiltinModelConfig(**bad)


@pytest.mark.parametrize("columns, rows", [(80, 81), (81, 10), (11, 81)])
def test_bad_grid_raises(columns, rows):
    with pytest.raises(ValueError, match="columns|rows"):
        build_builtin_model(BuiltinModelConfig(grid_columns=columns, grid_rows=rows))


def test_deterministic_and_seeded(model):
    again = build_builtin_model()
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(again, name), getattr(model, name), err_msg=name)
    other = build_builtin_model(BuiltinModelConfig(seed=1))
    np.testing.assert_array_equal(other.mean_shape, model.mean_shape)
    np.testing.assert_allclose(other.id_basis[:, :, :10], model.id_basis[:, :, :10], atol=1e-6)  # named modes
    assert not np.allclose(other.id_basis[:, :, -1], model.id_basis[:, :, -1])  # random ones


def test_save_load_roundtrip(model, tmp_path):
    back = load_model_npz(save_model_npz(model, tmp_path / "builtin.npz"))
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(back, name), getattr(model.canonical(), name), err_msg=name)
    assert back.metadata["expression_names"] == list(EXPRESSION_NAMES)
    assert back.name == "builtin" and back.license == model.license


def test_loads_as_torch_module():
    module = load_morphable_model("builtin")
    alpha_id, alpha_exp, beta = module.sample_coefficients(2, generator=torch.Generator().manual_seed(0))
    vertices, albedo = module(alpha_id, alpha_exp, beta)
    assert vertices.shape == (2, module.num_vertices, 3) and albedo.shape == vertices.shape
    assert torch.isfinite(vertices).all()


# -- modes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["id", "albedo"])
def test_std_strictly_decreasing(model, prefix):
    std = getattr(model, f"{prefix}_std")
    assert np.all(std > 0) and np.all(np.diff(std) < 0)


def test_identity_std_range(model):
    assert model.id_std[0] == pytest.approx(8.0) and model.id_std[-1] == pytest.approx(0.3, rel=1e-4)


@pytest.mark.parametrize("prefix", ["id", "exp", "albedo"])
def test_bases_unit_max_and_linearly_independent(model, prefix):
    basis = getattr(model, f"{prefix}_basis").astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(basis, axis=1).max(0), 1.0, rtol=1e-5)
    flat = basis.reshape(-1, basis.shape[2])
    singular = np.linalg.svd(flat, compute_uv=False)
    assert np.linalg.matrix_rank(flat) == basis.shape[2]
    assert singular[-1] / singular[0] > 1e-3


def test_identity_modes_orthogonal_and_free_of_rigid_motion(model):
    basis = model.id_basis.astype(np.float64)
    flat = basis.reshape(-1, basis.shape[2])
    gram = flat.T @ flat
    off_diagonal = gram - np.diag(np.diag(gram))
    assert np.abs(off_diagonal).max() < 1e-4 * np.diag(gram).max()
    centred = model.mean_shape - model.mean_shape.mean(0)
    rigid = ([np.broadcast_to(axis, centred.shape) for axis in np.eye(3)]
             + [np.cross(axis, centred) for axis in np.eye(3)])
    rigid = np.linalg.qr(np.stack([r.ravel() for r in rigid], 1))[0]
    leaked = np.linalg.norm(rigid.T @ flat, axis=0) / np.linalg.norm(flat, axis=0)
    assert leaked.max() < 1e-4


def test_identity_modes_are_smooth_and_global(model):
    # smooth: along every edge a unit-max mode changes by well under its peak per cm
    tris = model.triangles.astype(np.int64)
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    length = np.linalg.norm(model.mean_shape[edges[:, 0]] - model.mean_shape[edges[:, 1]], axis=1)
    change = np.linalg.norm(model.id_basis[edges[:, 0]] - model.id_basis[edges[:, 1]], axis=1)
    assert (change / length[:, None]).max() < 0.25  # per mm
    # global: a typical mode moves a good part of the face
    moved = (np.linalg.norm(model.id_basis, axis=1) > 0.05).mean(0)
    assert np.median(moved) > 0.3


def test_random_identities_keep_a_fold_free_surface(model):
    rng = np.random.default_rng(0)
    reference = face_normals(model.mean_shape, model.triangles)
    for _ in range(10):
        alpha = rng.normal(size=model.id_dims) * model.id_std
        normals = face_normals(model.mean_shape + model.id_basis @ alpha, model.triangles)
        assert np.all((normals * reference).sum(1) > 0)


# -- mesh -----------------------------------------------------------------------------------------
def test_face_proportions(model):
    x, y, z = model.mean_shape.T
    assert 190 <= y.max() - y.min() <= 210 and 130 <= x.max() - x.min() <= 160
    tip = model.mean_shape[model.landmark_indices[30]]
    beside = np.array([[-30.0, tip[1]], [30.0, tip[1]]])  # the cheeks at the height of the tip
    nearest = ((model.mean_shape[None, :, :2] - beside[:, None]) ** 2).sum(-1).argmin(1)
    assert 25 <= tip[2] - model.mean_shape[nearest, 2].mean() <= 35


def test_triangles_are_consistent_nondegenerate_and_outward(model):
    tris = model.triangles.astype(np.int64)
    normals = face_normals(model.mean_shape.astype(np.float64), tris)
    area = 0.5 * np.linalg.norm(normals, axis=1)
    assert area.min() > 0.01  # mm²
    assert np.all(normals[:, 2] > 0)  # a height field seen from +z: every triangle faces the viewer
    directed = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed), "an edge is used twice in the same direction"


def test_single_surface_with_one_hole_the_mouth(model):
    tris = model.triangles.astype(np.int64)
    V = model.num_vertices
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    adjacency = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(V, V))
    count, _ = connected_components(adjacency, directed=False)
    assert count == 1
    undirected, uses = np.unique(np.sort(edges, 1), axis=0, return_counts=True)
    assert V - len(undirected) + len(tris) == 0  # Euler characteristic of a disc with one hole
    boundary = undirected[uses == 1]
    y = model.mean_shape[:, 1]
    mouth_edges = boundary[np.all(np.abs(y[boundary] - LAYOUT.mouth_y) < 0.5, axis=1)]
    assert len(mouth_edges) >= 20  # the slit's two lips
    x = model.mean_shape[:, 0]
    assert np.abs(x[mouth_edges]).max() < LAYOUT.mouth_half_width


def test_nose_tip_normal_points_forward(model):
    tris = model.triangles.astype(np.int64)
    normals = face_normals(model.mean_shape.astype(np.float64), tris)
    tip = model.landmark_indices[30]
    around = normals[np.any(tris == tip, axis=1)].sum(0)
    around /= np.linalg.norm(around)
    assert around[2] > 0.8  # forward, a little down: the tip's lower half


def test_uv_is_the_grid_parameterisation(model):
    assert model.uv.min() == 0.0 and model.uv.max() == 1.0
    assert len(np.unique(model.uv, axis=0)) == model.num_vertices
    # v grows upwards like y; u grows with x
    rows = model.metadata["grid"]["rows"]
    columns = model.metadata["grid"]["columns"]
    grid_y = model.mean_shape[:, 1].reshape(rows, columns)
    grid_x = model.mean_shape[:, 0].reshape(rows, columns)
    assert np.all(np.diff(model.uv[:, 1].reshape(rows, columns), axis=0) > 0)
    assert np.all(np.diff(grid_x, axis=1) > 0) and np.all(np.diff(grid_y[:, 0]) > 0)
    # along the midline only the two rows of the closed mouth coincide
    assert np.sum(np.diff(grid_y[:, columns // 2]) > 0) == rows - 2


# -- landmarks and contours -----------------------------------------------------------------------
def test_landmarks_mirror_symmetric(model):
    points = model.mean_shape[model.landmark_indices]
    mirrored = points[IBUG_MIRROR] * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(points, mirrored, atol=1e-3)
    np.testing.assert_array_equal(model.landmark_indices[IBUG_MIRROR], mirror_vertex(model, model.landmark_indices))


def test_landmark_sides_and_vertical_order(model):
    p = model.mean_shape[model.landmark_indices]
    x, y, z = p.T
    right = list(range(0, 8)) + list(range(17, 22)) + [31, 32] + list(range(36, 42)) + [48, 49, 50, 58, 59, 60, 61, 67]
    left = IBUG_MIRROR[right]
    assert np.all(x[right] < -1) and np.all(x[left] > 1)
    assert np.all(np.abs(x[[8, 27, 28, 29, 30, 33, 51, 57, 62, 66]]) < 1e-6)
    eyes, brows = y[36:48], y[17:27]
    assert brows.min() > eyes.max()
    assert eyes.min() > y[30] > y[33] > y[51] > y[62] >= y[66] > y[57] > y[8]
    assert np.all(np.diff(y[27:31]) < 0)  # bridge top -> tip
    assert np.argmax(z) == 30  # the nose tip is the most prominent landmark
    assert y[8] == model.mean_shape[:, 1].min()  # chin at the bottom
    # eye contours: outer corner, over the upper lid, inner corner, back along the lower lid
    assert x[36] < x[37] < x[38] < x[39] and x[39] > x[40] > x[41] > x[36]
    assert min(y[37], y[38]) > max(y[40], y[41])
    assert x[42] < x[43] < x[44] < x[45]
    # jaw from the right ear down to the chin and up to the left ear
    assert np.all(np.diff(y[0:9]) < 0) and np.all(np.diff(y[8:17]) > 0)
    assert np.all(np.diff(x[0:17]) > 0)
    # brows outer -> inner on the right, inner -> outer on the left; lips in iBUG order
    assert np.all(np.diff(x[17:27]) > 0) and np.all(np.diff(x[48:55]) > 0) and np.all(np.diff(x[54:60]) < 0)
    assert np.all(np.diff(x[60:65]) > 0) and np.all(np.diff(x[[64, 65, 66, 67]]) < 0)


def test_contour_lines_march_outwards_from_the_frontal_vertex(model):
    assert model.contour_landmarks.tolist() == [k for k in range(17) if k != 8]
    assert np.all(model.contour_lines >= 0) and model.contour_lines.shape[1] >= 10
    for k, line in zip(model.contour_landmarks, model.contour_lines):
        x = model.mean_shape[line, 0]
        assert np.all(np.diff(np.abs(x)) > 0), f"line of landmark {k} is not ordered outwards"
        assert np.all(np.sign(x) == (-1 if k < 8 else 1))
        assert line[-1] == model.landmark_indices[k]  # the frontal outline vertex ends the line
        assert len(np.unique(line // model.metadata["grid"]["columns"])) == 1  # one grid row


def test_yawed_face_silhouette_moves_far_side_contour_inwards(model):
    module = load_morphable_model("builtin")
    for yaw_deg in (-40.0, 40.0):
        angles = torch.tensor([[0.0, np.radians(yaw_deg), 0.0]], dtype=torch.float32)
        uv, _ = perspective_project(module.mean_shape[None], angles, torch.tensor([[0.0, 0.0, 1000.0]]),
                                    torch.tensor([[1000.0]]), torch.tensor([[112.0, 112.0]]))
        chosen = march_contour_landmarks(uv, angles, module.landmark_indices, module.contour_landmarks,
                                         module.contour_lines)[0].numpy()
        lines = model.contour_lines
        position = np.array([np.flatnonzero(line == chosen[k])[0] for k, line in zip(model.contour_landmarks, lines)])
        far = model.contour_landmarks > 8 if yaw_deg > 0 else model.contour_landmarks < 8
        # positive yaw turns the nose to image right: the subject's left (x > 0, landmarks 9-16) turns away
        assert np.all(position[~far] == lines.shape[1] - 1)
        assert np.all((position[far] > 0) & (position[far] < lines.shape[1] - 4))


# -- expressions ----------------------------------------------------------------------------------
def test_expressions_are_local(model):
    for k, name in enumerate(EXPRESSION_NAMES):
        moved = np.linalg.norm(model.exp_basis[:, :, k], axis=1) > 0
        assert moved.mean() < 0.35, f"{name} moves {moved.mean():.0%} of the vertices"


def test_jaw_open_moves_chin_not_forehead_and_parts_the_lips(model):
    d = np.linalg.norm(expression(model, "jaw_open"), axis=1)
    y = model.mean_shape[:, 1]
    chin = d[model.landmark_indices[[7, 8, 9, 57]]].min()
    forehead = d[y > LAYOUT.brow_y].max()
    assert chin > 5.0 and forehead <= 1e-6 * chin
    assert d[model.landmark_indices[[17, 26, 27, 30, 36, 45]]].max() == 0.0
    upper, lower = model.landmark_indices[62], model.landmark_indices[66]
    closed = np.linalg.norm(model.mean_shape[upper] - model.mean_shape[lower])
    opened_shape = model.mean_shape + expression(model, "jaw_open")
    opened = np.linalg.norm(opened_shape[upper] - opened_shape[lower])
    assert closed < 0.5 and opened > 8.0
    assert opened_shape[lower, 1] < model.mean_shape[lower, 1]  # the lower lip drops


def test_eye_closure_left_moves_only_the_left_upper_face(model):
    d = np.linalg.norm(expression(model, "eye_close_left"), axis=1)
    x, y = model.mean_shape[:, 0], model.mean_shape[:, 1]
    assert d[(x <= 0) | (y < LAYOUT.nose_tip_y)].max() == 0.0
    assert d[(x > 0) & (y >= LAYOUT.nose_tip_y)].max() > 2.0
    closed = model.mean_shape + 2 * expression(model, "eye_close_left")
    lm = model.landmark_indices
    opening_before = model.mean_shape[lm[[43, 44]], 1].mean() - model.mean_shape[lm[[46, 47]], 1].mean()
    opening_after = closed[lm[[43, 44]], 1].mean() - closed[lm[[46, 47]], 1].mean()
    assert opening_after < 0.25 * opening_before
    right_eye = lm[36:42]
    np.testing.assert_array_equal(closed[right_eye], model.mean_shape[right_eye])


@pytest.mark.parametrize("left, right", [("smile_left", "smile_right"), ("eye_close_left", "eye_close_right"),
                                         ("brow_lower_left", "brow_lower_right"), ("mouth_left", "mouth_right"),
                                         ("eye_squint_left", "eye_squint_right"),
                                         ("brow_raise_outer_left", "brow_raise_outer_right")])
def test_left_and_right_expressions_mirror_each_other(model, left, right):
    d_left, d_right = expression(model, left), expression(model, right)
    mirrored = d_left[mirror_vertex(model, np.arange(model.num_vertices))] * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(d_right, mirrored, atol=1e-3)
    x = model.mean_shape[:, 0]
    if not left.startswith("mouth"):
        assert np.abs(d_left[x < 0]).max() == 0.0


def test_named_expression_regions(model):
    lm = model.landmark_indices
    y = model.mean_shape[:, 1]

    def peak_y(name):
        return y[np.argmax(np.linalg.norm(expression(model, name), axis=1))]

    for name in ("brow_raise_inner", "brow_lower_left", "eye_close_left", "eye_wide"):
        assert peak_y(name) > y[lm[30]], name
    for name in ("smile_left", "lip_pucker", "lips_part", "mouth_stretch", "jaw_open", "cheek_puff"):
        assert peak_y(name) < y[lm[33]], name
    smile = model.mean_shape + expression(model, "smile_left")
    assert smile[lm[54], 1] > model.mean_shape[lm[54], 1] + 2.0  # the left mouth corner rises
    assert smile[lm[54], 0] > model.mean_shape[lm[54], 0]
    pucker = expression(model, "lip_pucker")
    assert pucker[lm[62], 2] > 3.0


# -- albedo ---------------------------------------------------------------------------------------
def test_albedo_within_unit_range(model):
    assert model.albedo_mean.min() >= 0.0 and model.albedo_mean.max() <= 1.0
    for k in range(model.tex_dims):
        for sign in (-3.0, 3.0):
            colour = model.albedo_mean + sign * model.albedo_std[k] * model.albedo_basis[:, :, k]
            assert ((colour < 0) | (colour > 1)).mean() < 0.01
    rng = np.random.default_rng(0)
    for _ in range(10):
        colour = model.albedo_mean + model.albedo_basis @ (rng.normal(size=model.tex_dims) * model.albedo_std)
        assert ((colour < 0) | (colour > 1)).mean() < 0.01


def test_albedo_mean_has_facial_features(model):
    a = model.albedo_mean
    lm = model.landmark_indices
    forehead = a[np.argmin(np.linalg.norm(model.mean_shape[:, :2] - [0.0, 60.0], axis=1))]
    lips = a[lm[[51, 57]]].mean(0)
    brow = a[lm[19]]
    assert lips[0] / lips[1] > forehead[0] / forehead[1] + 0.2  # redder lips
    assert brow.sum() < 0.7 * forehead.sum()  # darker brows
    eye_centre = np.argmin(np.linalg.norm(model.mean_shape[:, :2] - [LAYOUT.eye_x, LAYOUT.eye_y], axis=1))
    assert a[eye_centre].sum() < 0.5 * forehead.sum()  # iris/pupil
    sclera = a[np.argmin(np.linalg.norm(model.mean_shape[:, :2] - [LAYOUT.eye_x + 9.5, LAYOUT.eye_y + 0.5], axis=1))]
    assert sclera.min() > 0.75


def test_mesh_builder_rejects_even_columns():
    with pytest.raises(ValueError, match="odd"):
        build_face_grid(columns=40)
