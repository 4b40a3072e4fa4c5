"""Building a dataset: crops, the camera re-expressed in the crop, ground truth, splits, resume and skips."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from diffface.camera import perspective_project
from diffface.app.dataset.build import BuildConfig, assign_splits, build_dataset, item_name, item_names
from diffface.data.crops import crop_antialiased, params_in_crop
from diffface.data.format import FaceDataset, read_index, read_info, read_item
from diffface.landmarks.crop import boxes_from_landmarks, crop_transform
from diffface.morphable_model import MorphableModel

from .conftest import CROP_SIZE, SYNTH_FACES


def test_summary_files_and_reader(built, builtin_model):
    out, summary = built
    assert summary["items"] == summary["built"] == SYNTH_FACES and summary["skipped"] == 0
    assert summary["source_kind"] == "synth" and (summary["train"], summary["val"]) == (6, 2)
    info = read_info(out)
    assert info.crop_size == CROP_SIZE and info.model_fingerprint == builtin_model.fingerprint
    assert len(info.param_names) == 118 == builtin_model.layout.network_size
    entries = read_index(out)
    assert sorted(e.name for e in entries) == [f"face_{i:04d}" for i in range(SYNTH_FACES)]
    for entry in entries:
        crop, arrays = read_item(out, entry.name)
        assert crop.shape == (CROP_SIZE, CROP_SIZE, 3) and crop.dtype == np.uint8
        assert arrays["params"].shape == (118,) and arrays["params_full"].shape == (builtin_model.layout.full_size,)
        assert arrays["vertices"].shape == (builtin_model.num_vertices, 3)
        assert arrays["projections"].shape == (builtin_model.num_vertices, 2) and arrays["landmarks"].shape == (68, 2)
        assert Image.open(out / "previews" / f"{entry.name}.png").size == (2 * 96, 96)
        assert {"landmark_rms_px", "max_abs_sigma", "abs_yaw_deg", "score"} <= set(entry.quality)
    train = FaceDataset(out, "train")
    assert len(train) == 6 and len(FaceDataset(out, "val")) == 2
    item = train[0]
    assert item["image"].shape == (3, CROP_SIZE, CROP_SIZE) and item["params"].shape == (118,)
    assert not list(out.rglob("*.tmp"))


def test_parameters_are_re_expressed_in_the_crop_camera(built, synth_source, builtin_model):
    """Projecting the stored (crop) parameters lands on the crop-transformed projections in the photo."""
    out, _ = built
    model, layout = builtin_model, builtin_model.layout
    truth = np.load(synth_source / "params.npz")
    names = [str(n) for n in truth["sample_names"]]
    for entry in read_index(out):
        i = names.index(entry.name)
        _, arrays = read_item(out, entry.name)
        original = layout.unpack(torch.from_numpy(truth["params"][i:i + 1])).map(torch.Tensor.double)
        # the crop box, recomputed here from the observed landmarks of the photo
        box = boxes_from_landmarks(torch.from_numpy(truth["landmarks_2d"][i:i + 1]).double(), 1.25)
        transform = crop_transform(box, CROP_SIZE)
        np.testing.assert_allclose(arrays["crop_matrix"], transform.matrix[0].numpy(), atol=1e-5)
        vertices = model.shape(original.alpha_id.float(), original.alpha_exp.float()).double()
        photo_uv, _ = perspective_project(vertices, original.angles, original.translation, original.focal,
                                          original.principal_point)
        expected = transform.apply_points(photo_uv)[0]
        crop = layout.unpack(torch.from_numpy(arrays["params"])[None].double())
        crop_uv, _ = perspective_project(torch.from_numpy(arrays["vertices"])[None].double(), crop.angles,
                                         crop.translation, crop.focal, crop.principal_point)
        assert float((crop_uv[0] - expected).abs().max()) < 1e-4
        assert float((torch.from_numpy(arrays["projections"]).double() - expected).abs().max()) < 1e-4
        # pose and shape unchanged; only the intrinsics move
        np.testing.assert_allclose(crop.angles.numpy(), original.angles.numpy(), atol=1e-6)
        np.testing.assert_allclose(arrays["vertices"], vertices[0].numpy(), atol=1e-4)
        scale = float(transform.scale)
        np.testing.assert_allclose(float(crop.focal), scale * float(original.focal), rtol=1e-6)
        # the stored landmarks are the true (clean) landmarks, moved into the crop
        clean = transform.apply_points(torch.from_numpy(truth["landmarks_2d_clean"][i:i + 1]).double())[0]
        np.testing.assert_allclose(arrays["landmarks"], clean.numpy(), atol=1e-4)


def test_antialiased_crop_maps_pixel_centres_exactly():
    """A linear ramp stays the same ramp in crop coordinates, through the supersampled path and the plain one."""
    H, W = 300, 400
    rows, cols = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                                indexing="ij")
    a, b, c = 0.0011, 0.0007, 0.1
    image = torch.stack([a * cols + b * rows + c] * 3).float()
    for box in (torch.tensor([101.3, 52.7, 301.3, 252.7]), torch.tensor([150.0, 100.0, 190.0, 140.0])):
        crop, transform = crop_antialiased(image, box, 32)
        s, (tx, ty) = float(transform.scale), transform.offset[0].tolist()
        v, u = torch.meshgrid(torch.arange(32.0, dtype=torch.float64), torch.arange(32.0, dtype=torch.float64),
                              indexing="ij")
        expected = a * (u - tx) / s + b * (v - ty) / s + c
        assert float((crop[0].double() - expected).abs().max()) < 1e-5


def test_params_in_crop_matches_apply_camera():
    from diffface.params import FaceParameters

    transform = crop_transform(torch.tensor([[10.0, 20.0, 110.0, 120.0]], dtype=torch.float64), 50)
    params = FaceParameters(torch.zeros(1, 2), torch.zeros(1, 1), torch.tensor([[1.0, 2.0, 500.0]]),
                            torch.zeros(1, 3), torch.tensor([[800.0]]), torch.tensor([[60.0, 70.0]]))
    moved = params_in_crop(params, transform)
    assert torch.allclose(moved.focal, torch.tensor([[400.0]])) and torch.allclose(
        moved.principal_point, torch.tensor([[0.5 * 60 - 5.5, 0.5 * 70 - 10.5]]))
    assert moved.translation is params.translation


def test_resume_after_a_kill_keeps_what_was_written(synth_source, builtin_model, tmp_path):
    out = tmp_path / "D"
    config = BuildConfig(crop_size=32, batch_size=3, previews=False, val_fraction=0.5)
    done = []

    def killed_after_first_batch(n):
        done.append(n)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dataset(synth_source, out, config, model=builtin_model, progress=killed_after_first_batch)
    assert done == [3] and len(read_index(out)) == 3 and len(list((out / "items").glob("*.npz"))) == 3
    readable = FaceDataset(out, split=None)
    assert len(readable) == 3 and readable[2]["image"].shape == (3, 32, 32)
    splits_before = {e.name: e.split for e in read_index(out)}
    summary = build_dataset(synth_source, out, config, model=builtin_model)
    assert (summary["resumed"], summary["built"], summary["items"]) == (3, SYNTH_FACES - 3, SYNTH_FACES)
    after = {e.name: e.split for e in read_index(out)}
    assert all(after[n] == s for n, s in splits_before.items())
    assert after == assign_splits(list(after), 0.5, 0)
    with pytest.raises(ValueError, match="other settings"):
        build_dataset(synth_source, out, BuildConfig(crop_size=48, previews=False), model=builtin_model)


def test_bad_faces_are_skipped_with_a_reason(synth_source, builtin_model, tmp_path):
    source = tmp_path / "S"
    shutil.copytree(synth_source, source)
    (source / "images" / "face_0001.png").write_bytes(b"not a png")
    data = dict(np.load(source / "params.npz"))
    data["params"][2, 0] = np.nan
    np.savez(source / "params.npz", **data)
    summary = build_dataset(source, tmp_path / "D", BuildConfig(crop_size=32, previews=False), model=builtin_model)
    assert summary["items"] == SYNTH_FACES - 2 and summary["skipped"] == 2
    reasons = {r["key"]: r["reason"] for r in json.loads((tmp_path / "D" / "skipped.json").read_text())}
    assert "face_0001.png" in reasons["face_0001"] and "not finite" in reasons["face_0002"]


def test_a_model_with_another_fingerprint_is_a_clear_error(synth_source, tiny_model_data, tmp_path):
    with pytest.raises(ValueError, match="fingerprint"):
        build_dataset(synth_source, tmp_path / "D", BuildConfig(previews=False), model=MorphableModel(tiny_model_data))
    assert not (tmp_path / "D").exists()


def test_300w_layout_is_fitted_then_built(synth_source, builtin_model, tmp_path):
    """Folders of photos with .pts beside them: fitted into DATASET/fits (resumable), then built from the fits."""
    source = tmp_path / "300W"
    for sub, faces in (("01_Indoor", range(0, 2)), ("02_Outdoor", range(2, 4))):
        (source / sub).mkdir(parents=True)
        for i in faces:
            for suffix in (".png", ".pts"):
                shutil.copy(synth_source / "images" / f"face_{i:04d}{suffix}", source / sub)
    shutil.copy(synth_source / "images" / "face_0004.png", source / "02_Outdoor" / "no_landmarks.png")
    out = tmp_path / "D"
    config = BuildConfig(crop_size=48, preview_size=48, fit_image_size=96)
    summary = build_dataset(source, out, config, model=builtin_model)
    assert summary["source_kind"] == "images" and summary["items"] == 4 and summary["skipped"] == 1
    assert "no landmark annotation" in summary["skipped_items"][0]["reason"]
    assert sorted(e.name for e in read_index(out)) == ["01_Indoor__face_0000", "01_Indoor__face_0001",
                                                         "02_Outdoor__face_0002", "02_Outdoor__face_0003"]
    assert len(list((out / "fits" / "results").rglob("*.npz"))) == 4
    _, arrays = read_item(out, "01_Indoor__face_0000")
    assert "params_full" not in arrays  # stage 1 only: no albedo or light
    entry = read_index(out)[0]
    assert entry.quality["texture_residual"] is None and entry.quality["landmark_rms_px"] < 0.03 * 48 * 2
    again = build_dataset(source, out, config, model=builtin_model)
    assert (again["resumed"], again["built"]) == (4, 0)


def test_names_and_splits():
    assert item_name("300W/01_Indoor/indoor_001.png") == "300W__01_Indoor__indoor_001"
    assert item_name("a b/c#d.jpg") == "a_b__c_d"
    assert item_names(["x.png", "x.jpg"]) == {"x.png": "x", "x.jpg": "x-2"}
    splits = assign_splits([f"n{i}" for i in range(100)], 0.1, seed=3)
    assert sum(s == "val" for s in splits.values()) == 10
    assert splits == assign_splits([f"n{i}" for i in reversed(range(100))], 0.1, seed=3)
    assert splits != assign_splits([f"n{i}" for i in range(100)], 0.1, seed=4)


def test_config_yaml_and_bad_settings(tmp_path):
    path = tmp_path / "build.yaml"
    path.write_text("crop_size: 128\nquality:\n  max_abs_yaw_deg: 45\nfit_stages: [landmarks, texture]\n")
    config = BuildConfig.from_yaml(path)
    assert config.crop_size == 128 and config.quality.max_abs_yaw_deg == 45.0
    assert config.fit_stages == ("landmarks", "texture")
    assert config.with_overrides(["quality.max_abs_sigma=4"]).quality.max_abs_sigma == 4.0
    path.write_text("crop_sise: 3\n")
    with pytest.raises(ValueError, match="crop_sise"):
        BuildConfig.from_yaml(path)
    with pytest.raises(ValueError, match="val_fraction"):
        BuildConfig(val_fraction=2).validate()


def test_a_foreign_output_folder_is_left_alone(synth_source, builtin_model, tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="not empty"):
        build_dataset(synth_source, tmp_path, BuildConfig(previews=False), model=builtin_model)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
    with pytest.raises(ValueError, match="another folder"):
        build_dataset(synth_source, synth_source, BuildConfig(previews=False), model=builtin_model)


def test_stage_2_fit_results_keep_albedo_light_energies_and_flags(synth_source, builtin_model, tmp_path):
    """A fit folder written in the fit job's format (here from the true parameters, as a stage-2 fit would be)."""
    from diffface.fitting.job.results import RESULT_FORMAT, result_path, write_fit_result

    truth = np.load(synth_source / "params.npz")
    fits = tmp_path / "fits"
    for i in range(2):
        name = str(truth["sample_names"][i])
        write_fit_result(result_path(fits, f"{name}.png"), {
            "format": np.array(RESULT_FORMAT), "image": np.array(str(synth_source / "images" / f"{name}.png")),
            "key": np.array(f"{name}.png"), "image_size": np.array([96, 96]),
            "stages": np.array(["landmarks", "texture"]), "params": truth["params"][i],
            "param_names": truth["param_names"], "landmarks": truth["landmarks_2d_clean"][i],
            "landmarks_observed": truth["landmarks_2d"][i],
            "energy_names": np.array(["landmarks/total", "texture/texture"]),
            "energy_values": np.array([1.0, 0.07]), "flag_names": np.array(["diverged", "nonfinite"]),
            "flag_values": np.array([i == 1, False]), "crop_matrix": np.eye(3), "crop_size": np.array(224),
            "model_name": np.array(builtin_model.name), "model_fingerprint": np.array(builtin_model.fingerprint)})
    (fits / "results" / "face_0009.png.failed.json").write_text(
        json.dumps({"image": "x/face_0009.png", "key": "face_0009.png", "reason": "no face found"}))
    out = tmp_path / "D"
    summary = build_dataset(fits, out, BuildConfig(crop_size=48, preview_size=48), model=builtin_model)
    assert summary["source_kind"] == "fits" and summary["items"] == 2 and summary["skipped"] == 1
    assert "no face found" in summary["skipped_items"][0]["reason"]
    first, second = read_index(out)
    assert first.quality["texture_energy"] == pytest.approx(0.07) and first.quality["texture_residual"] < 0.15
    assert "diverged" in second.flags and second.quality["score"] >= 2 > first.quality["score"]
    _, arrays = read_item(out, "face_0000")
    assert arrays["params_full"].shape == (builtin_model.layout.full_size,)
    np.testing.assert_allclose(arrays["params_full"][118:], truth["params"][0][118:], rtol=1e-6)


def _write_fits(fits, synth_source, model, landmark_shift=None, images=None) -> list[str]:
    """Stage-1 fit results of the first three synthetic faces (their true parameters), as the fit job writes
    them; ``landmark_shift``/``images``: name -> offset of the observed landmarks / the photo to point at."""
    from diffface.fitting.job.results import RESULT_FORMAT, result_path, write_fit_result

    truth = np.load(synth_source / "params.npz")
    names = [str(truth["sample_names"][i]) for i in range(3)]
    for i, name in enumerate(names):
        image = (images or {}).get(name, synth_source / "images" / f"{name}.png")
        write_fit_result(result_path(fits, f"{name}.png"), {
            "format": np.array(RESULT_FORMAT), "image": np.array(str(image)), "key": np.array(f"{name}.png"),
            "image_size": np.array([96, 96]), "stages": np.array(["landmarks"]),
            "params": truth["params"][i][:model.layout.network_size],
            "param_names": np.array(model.layout.names()), "landmarks": truth["landmarks_2d_clean"][i],
            "landmarks_observed": truth["landmarks_2d"][i] + (landmark_shift or {}).get(name, 0.0),
            "energy_names": np.array(["landmarks/total"]), "energy_values": np.array([1.0]),
            "flag_names": np.array(["diverged"]), "flag_values": np.array([False]),
            "crop_matrix": np.eye(3), "crop_size": np.array(224),
            "model_name": np.array(model.name), "model_fingerprint": np.array(model.fingerprint)})
    return names


def test_unreadable_fit_results_are_named_and_skipped(synth_source, builtin_model, tmp_path):
    fits = tmp_path / "fits"
    names = _write_fits(fits, synth_source, builtin_model)
    damaged = fits / "results" / f"{names[1]}.png.npz"
    damaged.write_bytes(damaged.read_bytes()[:200])  # cut short
    (fits / "results" / "lost.png.failed.json").write_text('{"image": "lost.png", "ke')
    summary = build_dataset(fits, tmp_path / "D", BuildConfig(crop_size=32, previews=False), model=builtin_model)
    assert (summary["items"], summary["skipped"]) == (2, 2)
    reasons = {r["key"]: r["reason"] for r in summary["skipped_items"]}
    assert reasons[f"{names[1]}.png"].startswith(f"{damaged}: unreadable fit result")
    assert str(fits / "results" / "lost.png.failed.json") in reasons["lost.png"]
    assert sorted(e.name for e in read_index(tmp_path / "D")) == [names[0], names[2]]


def test_impossible_faces_are_skipped_not_built(synth_source, builtin_model, tmp_path):
    """Landmarks far off their photo, or a 1 x 1 photo, would give black crops scored as normal fits."""
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "one_pixel.png")
    fits = tmp_path / "fits"
    names = _write_fits(fits, synth_source, builtin_model, landmark_shift={"face_0000": 1e6},
                        images={"face_0001": tmp_path / "one_pixel.png"})
    summary = build_dataset(fits, tmp_path / "D", BuildConfig(crop_size=32, previews=False), model=builtin_model)
    reasons = {r["key"]: r["reason"] for r in summary["skipped_items"]}
    assert (summary["items"], set(reasons)) == (1, {f"{names[0]}.png", f"{names[1]}.png"})
    assert "68 of 68 landmarks lie outside the 96x96 image" in reasons[f"{names[0]}.png"]
    assert "one_pixel.png: image too small to hold a face (1x1 pixels" in reasons[f"{names[1]}.png"]
    loose = BuildConfig(crop_size=32, previews=False).with_overrides(["limits.max_outside_fraction=1",
                                                                      "limits.min_image_side=1"])
    assert build_dataset(fits, tmp_path / "D2", loose, model=builtin_model)["items"] == 3


def test_photo_folder_with_netpbm_photos_a_huge_one_and_other_files(synth_source, builtin_model, tmp_path):
    source = tmp_path / "photos"
    source.mkdir()
    shutil.copy(synth_source / "images" / "face_0000.png", source)
    Image.open(synth_source / "images" / "face_0001.png").convert("RGB").save(source / "face_0001.pgm")
    for i in range(2):
        shutil.copy(synth_source / "images" / f"face_{i:04d}.pts", source)
    Image.new("1", (20000, 10000)).save(source / "huge.png")
    (source / "readme.txt").write_text("photos")
    summary = build_dataset(source, tmp_path / "D", BuildConfig(crop_size=32, previews=False, fit_image_size=96),
                            model=builtin_model)
    assert (summary["items"], summary["skipped"], summary["left_out"]) == (2, 1, {".txt": 1})
    assert "huge.png: image too large (20000x10000" in summary["skipped_items"][0]["reason"]
    assert sorted(e.name for e in read_index(tmp_path / "D")) == ["face_0000", "face_0001"]
