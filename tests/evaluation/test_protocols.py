"""Benchmark protocols (NoW, AFLW2000-3D, BU-4DFE, MICC Florence, folder pairing).

None of these datasets can be downloaded here (each needs registration with its owner), so every
test builds tiny fake files in the dataset's layout and format.
"""

import numpy as np
import pytest
import torch
from scipy.io import savemat

from diffface.evaluation.protocols import (
    Bu4dfeProtocol, MiccProtocol, aflw2000_nme, aflw2000_nme_by_yaw, error_summary, micc_frame_average,
    micc_frame_indices, now_scan_to_mesh_errors, pair_folders, read_aflw2000_mat, read_landmarks_3d,
    read_now_scan, read_pp, split_subjects, subject_of, write_pp)
from diffface.mesh_io import write_obj


def _grid_mesh(n=12, size=60.0):
    """A gently curved square sheet (mm). Shape: -> (n², 3), (2(n-1)², 3)."""
    u, v = np.meshgrid(np.linspace(-size / 2, size / 2, n), np.linspace(-size / 2, size / 2, n))
    vertices = np.stack([u.ravel(), v.ravel(), 0.01 * (u ** 2 + v ** 2).ravel()], 1)
    index = np.arange(n * n).reshape(n, n)
    a, b, c, d = index[:-1, :-1].ravel(), index[:-1, 1:].ravel(), index[1:, 1:].ravel(), index[1:, :-1].ravel()
    return vertices, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


PP_TEXT = """<!DOCTYPE PickedPoints>
<PickedPoints>
 <DocumentData><DateTime time="12:00:00" date="2019-01-01"/><User name="x"/><DataFileName name="scan.obj"/></DocumentData>
 <point x="1.5" y="2" z="3" active="1" name="0"/>
 <point x="-4" y="5.25" z="6" active="0" name="1"/>
</PickedPoints>
"""


def test_read_pp_and_round_trip(tmp_path):
    (tmp_path / "scan_picked_points.pp").write_text(PP_TEXT)
    np.testing.assert_array_equal(read_pp(tmp_path / "scan_picked_points.pp"), [[1.5, 2, 3], [-4, 5.25, 6]])
    points = np.random.default_rng(0).normal(size=(7, 3))
    np.testing.assert_array_equal(read_landmarks_3d(write_pp(tmp_path / "b.pp", points)), points)


@pytest.mark.parametrize("text, message", [("not xml <", "cannot read"), ("<PickedPoints/>", "no <point>"),
                                           ('<P><point x="1" y="2"/></P>', "malformed")])
def test_read_pp_errors_name_the_file(tmp_path, text, message):
    (tmp_path / "bad_points.pp").write_text(text)
    with pytest.raises(ValueError, match=message) as exc:
        read_pp(tmp_path / "bad_points.pp")
    assert "bad_points.pp" in str(exc.value)


def test_now_errors_are_zero_for_an_exact_prediction_under_a_similarity(tmp_path):
    vertices, faces = _grid_mesh()
    lmk7 = np.array([0, 11, 60, 65, 77, 132, 143])
    rotation = torch.linalg.matrix_exp(torch.tensor([[0, -0.3, 0.1], [0.3, 0, -0.2], [-0.1, 0.2, 0]],
                                                    dtype=torch.float64)).numpy()
    scan = 1.3 * vertices @ rotation.T + np.array([10.0, 20.0, 30.0])  # the scan in its own frame
    write_obj(tmp_path / "scan.obj", scan, faces)
    write_pp(tmp_path / "scan.pp", scan[lmk7])
    scan_points, scan_landmarks = read_now_scan(tmp_path / "scan.obj"), read_pp(tmp_path / "scan.pp")
    errors = now_scan_to_mesh_errors(vertices, faces, vertices[lmk7], scan_points, scan_landmarks)
    assert errors.distances_mm.shape == (len(scan),) and errors.distances_mm.max() < 1e-9
    assert abs(float(errors.similarity.scale) - 1.3) < 1e-9
    # a prediction 2 mm off the surface along z (the sheet is nearly flat): about 2·1.3 mm everywhere
    # after the similarity, less after the rigid refinement
    shifted = vertices + np.array([0, 0, 2.0])
    errors = now_scan_to_mesh_errors(shifted, faces, vertices[lmk7], scan_points, scan_landmarks)
    summary = errors.summary()
    assert 2.3 < summary["median_mm"] < 2.7 and set(summary) == {"median_mm", "mean_mm", "std_mm", "points"}
    refined = now_scan_to_mesh_errors(shifted, faces, vertices[lmk7], scan_points, scan_landmarks,
                                      rigid_refinement_iterations=3)
    assert refined.summary()["mean_mm"] < 0.5 * summary["mean_mm"]
    with pytest.raises(ValueError, match="same"):
        now_scan_to_mesh_errors(vertices, faces, vertices[lmk7[:5]], scan_points, scan_landmarks)


def test_error_summary_pools_scans():
    summary = error_summary([np.array([1.0, 2.0]), np.array([3.0])])
    assert summary == {"median_mm": 2.0, "mean_mm": 2.0, "std_mm": pytest.approx(np.std([1, 2, 3])), "points": 3}
    with pytest.raises(ValueError):
        error_summary([])


def test_aflw2000_mat_reader_and_nme(tmp_path):
    rng = np.random.default_rng(0)
    gt = rng.uniform(50, 150, size=(2, 68, 2))
    for i in range(2):
        savemat(tmp_path / f"image0000{i}.mat", {"pt3d_68": np.concatenate([gt[i].T, rng.normal(size=(1, 68))]),
                                                 "pose_para": np.array([[0.1, np.radians(40.0 * i), 0.0, 0, 0, 0, 1]])})
    annotations = [read_aflw2000_mat(tmp_path / f"image0000{i}.mat") for i in range(2)]
    np.testing.assert_allclose(annotations[1].landmarks[:, :2], gt[1])
    assert annotations[1].yaw_deg == pytest.approx(40.0) and annotations[0].name == "image00000"
    box = np.sqrt(np.prod(gt.max(1) - gt.min(1), axis=1))
    pred = gt + np.array([3.0, 4.0])  # every landmark 5 px off
    nme = aflw2000_nme(pred, np.stack([a.landmarks[:, :2] for a in annotations]))
    np.testing.assert_allclose(nme, 5.0 / box)
    by_yaw = aflw2000_nme_by_yaw(nme, [a.yaw_deg for a in annotations])
    assert by_yaw["yaw_0_30"] == pytest.approx(nme[0]) and by_yaw["yaw_30_60"] == pytest.approx(nme[1])
    assert np.isnan(by_yaw["yaw_60_90"]) and by_yaw["balanced"] == pytest.approx(nme.mean())
    with pytest.raises(ValueError, match="68, 2"):
        aflw2000_nme(pred[:, :5], gt[:, :5])


def test_aflw2000_bad_mat_names_the_file(tmp_path):
    savemat(tmp_path / "image_bad.mat", {"pt2d": np.zeros((2, 21))})
    with pytest.raises(ValueError, match="image_bad.mat.*pt3d_68"):
        read_aflw2000_mat(tmp_path / "image_bad.mat")
    (tmp_path / "image_junk.mat").write_bytes(b"junk")
    with pytest.raises(ValueError, match="image_junk.mat"):
        read_aflw2000_mat(tmp_path / "image_junk.mat")


WRL = "#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] }\n" \
      "coordIndex [ 0, 1, 2, -1 ] } }\n"


def _bu4dfe(root, subjects):
    for subject in subjects:
        folder = root / subject / "Happy"
        folder.mkdir(parents=True)
        (folder / "000.wrl").write_text(WRL)
        np.save(folder / "000_landmarks.npy", np.zeros((83, 3)))
    return root


def test_bu4dfe_protocol_splits_by_subject_deterministically(tmp_path):
    subjects = ["F001", "F002", "F003", "M001", "M002", "M010", "F020", "M023", "F004", "M005"]
    root = _bu4dfe(tmp_path / "BU4DFE", subjects)
    (root / "F001" / "Happy" / "001.wrl").write_text(WRL)
    (root / "F001" / "Happy" / "001_landmarks.txt").write_text("# x y z\n" + "0 0 0\n" * 5)
    protocol = Bu4dfeProtocol.from_folder(root, seed=1)
    assert len(protocol.samples) == 11 and protocol.samples[0].name == "F001_Happy_000"
    assert len(protocol.val_subjects) == 2 and set(protocol.test_subjects) | set(protocol.val_subjects) == set(subjects)
    assert not set(protocol.test_subjects) & set(protocol.val_subjects)
    assert Bu4dfeProtocol.from_folder(root, seed=1) == protocol
    assert len(protocol.split("test")) + len(protocol.split("val")) == 11
    assert read_landmarks_3d(protocol.samples[1].landmarks).shape == (5, 3)
    assert {Bu4dfeProtocol.from_folder(root, seed=s).val_subjects for s in range(6)} != {protocol.val_subjects}
    with pytest.raises(ValueError, match="split"):
        protocol.split("train")
    (root / "M005" / "Happy" / "000_landmarks.npy").unlink()
    with pytest.raises(ValueError, match="000.wrl: no landmarks"):
        Bu4dfeProtocol.from_folder(root)


def test_subject_ids_and_split_helpers():
    assert subject_of("F001/Angry/000.wrl") == "F001" and subject_of("M023_Sad_010.wrl") == "M023"
    with pytest.raises(ValueError, match="subject id"):
        subject_of("scan_000.wrl")
    test, val = split_subjects(["F001", "F001", "M002"], 0.5, seed=0)
    assert sorted(test + val) == ["F001", "M002"] and len(val) == 1


def test_micc_protocol_and_frame_average(tmp_path):
    for subject in ("subject_01", "subject_02"):
        folder = tmp_path / "MICC" / subject / "Model" / "frontal1" / "obj"
        folder.mkdir(parents=True)
        (folder / "110920150452.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
        (tmp_path / "MICC" / subject / "Model" / "aaa_other.obj").write_text("v 0 0 0\n")
    protocol = MiccProtocol.from_folder(tmp_path / "MICC")
    assert [s.name for s in protocol.samples] == ["subject_01", "subject_02"]
    assert all("frontal1" in str(s.scan) for s in protocol.samples)
    frames = micc_frame_indices(100, "subject_01", seed=0)
    assert len(frames) == 23 == len(set(frames.tolist())) and frames.max() < 100
    np.testing.assert_array_equal(frames, micc_frame_indices(100, "subject_01", seed=0))
    assert not np.array_equal(frames, micc_frame_indices(100, "subject_01", seed=1))
    errors = {"subject_01": np.arange(100.0), "subject_02": np.ones(30)}
    averaged = micc_frame_average(errors, seed=0)
    assert averaged["subject_01"] == pytest.approx(frames.mean()) and averaged["subject_02"] == 1.0
    shapes = micc_frame_average({"subject_01": np.random.default_rng(0).normal(size=(40, 5, 3))})
    assert shapes["subject_01"].shape == (5, 3)
    with pytest.raises(ValueError, match="fewer than the 23"):
        micc_frame_indices(10, "subject_01")


def test_pair_folders_by_stem(tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "gt" / f"{name}.obj").write_text("v 0 0 0\n")
        np.save(tmp_path / "gt" / f"{name}_landmarks.npy", np.zeros((68, 3)))
    (tmp_path / "pred" / "a.ply").write_text("x")
    (tmp_path / "pred" / "b.obj").write_text("x")
    (tmp_path / "pred" / "z.obj").write_text("x")
    (tmp_path / "pred" / "notes.txt").write_text("x")
    pairs = pair_folders(tmp_path / "pred", tmp_path / "gt")
    assert [name for name, _, _ in pairs.pairs] == ["a", "b"]
    assert pairs.missing == ("c",) and pairs.unmatched == ("z",)
    (tmp_path / "pred" / "a.obj").write_text("x")
    with pytest.raises(ValueError, match="two meshes named 'a'"):
        pair_folders(tmp_path / "pred", tmp_path / "gt")
    with pytest.raises(FileNotFoundError):
        pair_folders(tmp_path / "nowhere", tmp_path / "gt")
