"""The shipped ischemic chain on a real (synthetic) DICOM series: ingest -> registration -> crops -> task parts."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from monai.data import MetaTensor, PersistentDataset, list_data_collate
from region_helpers import synthetic_early_dataset, to_numpy

from monai_stroke.anatomy import side_of_x
from monai_stroke.anatomy.laterality import mirror_side
from monai_stroke.transforms import HUWindow, RegionCropd, region_records
from monai_stroke.transforms.chains import available_chains, chain_identity, chain_params, load_chain
from monai_stroke.transforms.registration import RegisterToTemplate, RegisterToTemplated

CHAIN = "ischemic_regions"
# a quick registration (rigid, one 6 mm level) on a 2 mm template grid: enough for region-level laterality
FAST = {"template_spacing": 2.0, "registration": {"stages": ["rigid"], "levels_mm": [6.0], "iterations": 40}}
CROP = [32, 32]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return synthetic_early_dataset(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def cached(dataset, tmp_path_factory):
    """The early task's dataset, filled once: registration runs here and nowhere else in this module."""
    records = region_records(dataset)
    cache = tmp_path_factory.mktemp("cache") / chain_identity(CHAIN, "preprocess", crop_size=CROP, **FAST)
    chain = load_chain(CHAIN, ["preprocess", "finalize"], task="early_vs_intact", crop_size=CROP, **FAST)
    ds = PersistentDataset(records, chain, cache_dir=cache)
    registered = []
    crop = RegionCropd.__call__

    def spy(self, data):  # keeps the registered volume (with its registration meta) the cropper receives
        registered.append(data["image"])
        return crop(self, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RegionCropd, "__call__", spy)
        early = ds[0]
    return {"records": records, "cache": cache, "early": early, "registered": registered[0]}


def _preprocessed(cached) -> list[dict]:
    """The cached, task-independent region samples (HU), read back from the persistent cache."""
    (path,) = list(cached["cache"].glob("*.pt"))
    return torch.load(path, weights_only=True)


def test_the_chain_ships_with_three_parts_and_documented_params() -> None:
    assert CHAIN in available_chains()
    params = chain_params(CHAIN)
    assert params["task"] == "early_vs_intact" and params["slices"] == 3 and params["neighbours"] == 1
    for part in ("preprocess", "augment", "finalize"):
        assert len(load_chain(CHAIN, part).transforms) > 0


def test_preprocess_is_cached_once_and_shared_across_tasks(cached, monkeypatch) -> None:
    early = cached["early"]
    assert {s["label"].item() for s in early} <= {0.0, 1.0} and any(s["label"].item() == 1.0 for s in early)
    assert all(s["category"] in ("intact", "frank_hypodensity", "territorial_infarction") for s in early)
    # the preprocess part holds no task: same cache key for both tasks; the finalize part differs
    assert chain_identity(CHAIN, "preprocess", task="old_vs_intact", crop_size=CROP, **FAST) == cached["cache"].name
    assert chain_identity(CHAIN, "finalize", task="old_vs_intact") != chain_identity(CHAIN, "finalize")

    def no_registration(*args, **kwargs):
        raise AssertionError("registration ran again instead of reading the cache")

    monkeypatch.setattr(RegisterToTemplate, "__call__", no_registration)
    chain = load_chain(CHAIN, ["preprocess", "finalize"], task="old_vs_intact", crop_size=CROP, **FAST)
    old = PersistentDataset(cached["records"], chain, cache_dir=cached["cache"])[0]
    assert len(list(cached["cache"].glob("*.pt"))) == 1
    assert all(s["category"] in ("intact", "old_infarction") for s in old)  # labelled for its own task
    assert any(s["label"].item() == 1.0 for s in old)
    assert {(s["side"], s["region"]) for s in old} != {(s["side"], s["region"]) for s in early}


def test_train_evaluate_and_inference_give_identical_deterministic_output(cached) -> None:
    samples = _preprocessed(cached)
    evaluate = load_chain(CHAIN, "finalize", task="early_vs_intact")(samples)
    train = load_chain(CHAIN, ["augment", "finalize"], prob_affine=0.0, prob_noise=0.0)
    train.set_random_state(0)
    trained = train(samples)
    unlabelled = [{k: v for k, v in s.items() if k not in ("category", "contralateral_category")} for s in samples]
    inferred = load_chain(CHAIN, "finalize")(unlabelled)  # inference: no ground truth, every region kept
    assert len(inferred) == len(samples) > len(evaluate) and all("label" not in s for s in inferred)
    by_region = {(s["side"], s["region"]): s["image"] for s in inferred}
    for a, b in zip(evaluate, trained, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert torch.equal(a["image"], by_region[(a["side"], a["region"])])
        assert a["image"].shape == (3, *CROP) and a["image"].dtype == torch.float32
        assert not isinstance(a["image"], MetaTensor)
    batch = list_data_collate([evaluate])  # one patient's list of samples collates into one batch
    assert batch["image"].shape == (len(evaluate), 3, *CROP) and batch["label"].shape == (len(evaluate), 1)
    # with augmentation on, the same chain draws reproducibly from its seed
    noisy = load_chain(CHAIN, ["augment", "finalize"], prob_affine=1.0, prob_noise=1.0)
    runs = []
    for _ in range(2):
        noisy.set_random_state(7)
        runs.append(noisy(samples)[0]["image"])
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], evaluate[0]["image"])


@pytest.mark.parametrize(
    "params, check",
    [
        ({"task": "old_vs_intact"}, {"window": (40.0, 30.0), "channels": 3}),
        ({"window": [35, 10]}, {"window": (35.0, 10.0), "channels": 3}),
        ({"neighbours": 0}, {"window": (40.0, 20.0), "channels": 1}),
        ({"window_output": "uint8"}, {"window": (40.0, 20.0), "channels": 3, "levels": True}),
    ],
)
def test_finalize_params_flow_through(cached, params, check) -> None:
    samples = _preprocessed(cached)
    out = load_chain(CHAIN, "finalize", **params)(samples)
    task = params.get("task", "early_vs_intact")
    kept = [
        s
        for s in samples
        if s["category"]
        in {
            "early_vs_intact": ("intact", "frank_hypodensity", "territorial_infarction"),
            "old_vs_intact": ("intact", "old_infarction"),
        }[task]
    ]
    assert [(s["side"], s["region"]) for s in out] == [(s["side"], s["region"]) for s in kept]
    center, width = check["window"]
    first, source = out[0]["image"], kept[0]["image"]
    assert first.shape[0] == check["channels"]
    target = source[..., kept[0]["target_slice"]]
    windowed = HUWindow(center, width, output="uint8" if check.get("levels") else "float")(target)
    expected = windowed.float() / 255.0 if check.get("levels") else windowed
    middle = first[check["channels"] // 2]  # the target slice is the middle channel block
    torch.testing.assert_close(middle, torch.as_tensor(to_numpy(expected)[0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("contralateral, mask_outside", [(True, False), (False, True)])
def test_preprocess_params_reach_the_region_cropper(contralateral, mask_outside) -> None:
    chain = load_chain(CHAIN, "preprocess", contralateral=contralateral, mask_outside=mask_outside, crop_size=[48, 40])
    cropper = chain.transforms[-1]
    assert isinstance(cropper, RegionCropd)
    inner = cropper.croppers["image"]
    assert (inner.contralateral, inner.mask_outside, inner.spatial_size) == (contralateral, mask_outside, (48, 40))
    registration = chain.transforms[1]
    assert isinstance(registration, RegisterToTemplated)


def test_lesions_stay_on_their_side_through_registration_and_crops(dataset, cached) -> None:
    """Laterality end to end: the synthetic lesion map, carried into template space with the registration the chain
    found, falls inside the crop of the side and region lesion_codes.csv names, not inside the mirrored one."""
    reference = cached["registered"]
    pid = cached["records"][0]["patient_id"]
    codes = pd.read_csv(dataset / "lesion_codes.csv", dtype={"side": str, "region": str}, keep_default_na=False)
    codes = codes[(codes["patient_id"] == pid) & (codes["region"] != "")]
    assert len(codes) >= 2
    label_image = nib.load(dataset / pid / "lesions.nii.gz")
    lesion = MetaTensor(
        torch.from_numpy(np.asarray(label_image.dataobj, dtype=np.float32)[None]),
        affine=torch.as_tensor(label_image.affine),
    )
    moved = RegisterToTemplated(
        "lesion", spacing=FAST["template_spacing"], reference_key="ref", mode="nearest", padding_value=0.0
    )({"lesion": lesion, "ref": reference})["lesion"]
    samples = RegionCropd(
        "lesion", spatial_size=None, mode="nearest", slice_thickness_mm=0, slices=100, mask_key="mask"
    )({"lesion": moved})
    inside = {(s["side"], s["region"]): to_numpy(s["lesion"])[0][to_numpy(s["mask"])[0].astype(bool)] for s in samples}
    grid = to_numpy(moved)[0]
    x_mm = to_numpy(moved.affine)[0, 0] * np.arange(grid.shape[0]) + to_numpy(moved.affine)[0, 3]
    found = 0
    for code, side, region in codes[["code", "side", "region"]].itertuples(index=False):
        voxels = np.nonzero(grid == code)
        assert voxels[0].size, f"lesion {code} vanished in template space"
        assert side_of_x(x_mm[voxels[0]].mean()) == side
        own = np.count_nonzero(inside[(side, region)] == code)
        mirror = np.count_nonzero(inside[(mirror_side(side), region)] == code)
        assert mirror == 0, (code, side, region, own, mirror)  # never in the other hemisphere's crop
        found += own > 0
    # the quick rigid registration leaves a few mm of error (heads are scaled +-8 %): a lesion of a few voxels at the
    # cortex may miss its region, but most lesions must lie inside the crop of the region they were drawn in
    assert found >= (len(codes) + 1) // 2, (found, len(codes))
