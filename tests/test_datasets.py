"""segzoo.data.datasets on tiny fixtures laid out like the real datasets (2 images each).

Where SSSegmentation 1.7.0 is installed, its dataset classes read the same fixtures and must give
the same masks (its -100 ignore is our 255) and the same pixels (its BGR is our RGB).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segzoo.data import datasets as D
from segzoo.data.synthetic import ShapesDataset

H, W = 8, 12


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)


def _mask(path: Path, values, mode: str = "L") -> np.ndarray:
    """A HxW mask made of ``values`` tiled, saved as a PNG of ``mode``; returns the raw labels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = np.resize(np.asarray(values, dtype=np.uint8), H * W).reshape(H, W)
    im = Image.fromarray(raw, mode="L")
    if mode == "P":
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        im = Image.frombytes("P", (W, H), raw.tobytes())
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    im.save(path)
    return raw


def _mat(path: Path, raw: np.ndarray) -> None:
    sio = pytest.importorskip("scipy.io")
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.savemat(path, {"S": raw.astype(np.uint16), "names": np.zeros(3)}, do_compression=True)


def _list(path: Path, ids) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


# each builder lays out a dataset with 2 samples under root and returns (class, raw values, expected train ids)
def make_ade20k(root):
    base = root / "ADEChallengeData2016"
    ids = ["ADE_train_00000001", "ADE_train_00000002"]
    for n, i in enumerate(ids):
        _image(base / "images" / "training" / f"{i}.jpg", n)
        _mask(base / "annotations" / "training" / f"{i}.png", [0, 1, 150, 37])
    _list(base / "train.txt", ids)
    return D.ADE20K, [0, 1, 150, 37], [255, 0, 149, 36]


def make_cityscapes(root):
    ids = ["aachen/aachen_000000_000019_leftImg8bit", "bremen/bremen_000001_000019_leftImg8bit"]
    for n, i in enumerate(ids):
        _image(root / "leftImg8bit" / "train" / f"{i}.png", n)
        _mask(root / "gtFine" / "train" / f"{i.replace('leftImg8bit', 'gtFine_labelIds')}.png", [0, 7, 33, 26, 4])
    _list(root / "train.txt", ids)
    return D.Cityscapes, [0, 7, 33, 26, 4], [255, 0, 18, 13, 255]


def make_voc(root):
    ids = ["2007_000032", "2007_000039"]
    for n, i in enumerate(ids):
        _image(root / "JPEGImages" / f"{i}.jpg", n)
        _mask(root / "SegmentationClass" / f"{i}.png", [0, 20, 255, 5])
    _list(root / "ImageSets" / "Segmentation" / "train.txt", ids)
    return D.VOC, [0, 20, 255, 5], [0, 20, 255, 5]


def _context(root):
    ids = ["2008_000002", "2008_000003"]
    for n, i in enumerate(ids):
        _image(root / "JPEGImages" / f"{i}.jpg", n)
        _mask(root / "SegmentationClassContext" / f"{i}.png", [0, 1, 59, 255, 3])
    _list(root / "ImageSets" / "SegmentationContext" / "train.txt", ids)


def make_pascalcontext(root):
    _context(root)
    return D.PascalContext, [0, 1, 59, 255, 3], [0, 1, 59, 255, 3]


def make_pascalcontext59(root):
    _context(root)
    return D.PascalContext59, [0, 1, 59, 255, 3], [255, 0, 58, 255, 2]


def make_cocostuff10k(root):
    ids = ["COCO_train2014_000000000077", "COCO_train2014_000000000078"]
    raw = np.resize(np.array([0, 1, 182, 255, 40], dtype=np.uint16), H * W).reshape(H, W)
    for n, i in enumerate(ids):
        _image(root / "images" / f"{i}.jpg", n)
        _mat(root / "annotations" / f"{i}.mat", raw)
    _list(root / "imageLists" / "train.txt", ids)
    return D.COCOStuff10k, [0, 1, 182, 255, 40], [255, 0, 181, 255, 39]


def make_lip(root):
    ids = ["77_471474", "100034_483681"]
    for n, i in enumerate(ids):
        _image(root / "train_images" / f"{i}.jpg", n)
        _mask(root / "train_segmentations" / f"{i}.png", [0, 19, 255, 3])
    _list(root / "train_id.txt", ids)
    return D.LIP, [0, 19, 255, 3], [0, 19, 255, 3]


MAKERS = {"ade20k": make_ade20k, "cityscapes": make_cityscapes, "voc": make_voc, "pascalcontext": make_pascalcontext,
          "pascalcontext59": make_pascalcontext59, "cocostuff10k": make_cocostuff10k, "lip": make_lip}
REF_TYPES = {"ade20k": "ADE20kDataset", "cityscapes": "CityScapesDataset", "voc": "VOCDataset",
             "pascalcontext": "PascalContextDataset", "pascalcontext59": "PascalContext59Dataset",
             "cocostuff10k": "COCOStuff10kDataset", "lip": "LIPDataset"}
# the folder a missing-folder test removes, per dataset
MASK_DIRS = {"ade20k": "ADEChallengeData2016/annotations/training", "cityscapes": "gtFine/train",
             "voc": "SegmentationClass", "pascalcontext": "SegmentationClassContext",
             "pascalcontext59": "SegmentationClassContext", "cocostuff10k": "annotations", "lip": "train_segmentations"}


def _tiled(values):
    return np.resize(np.asarray(values, dtype=np.int64), H * W).reshape(H, W)


def test_registry_lists_every_dataset():
    assert set(MAKERS) | {"folder"} == set(D.list_datasets())


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_reads_fixture(tmp_path, name):
    cls, raw, expected = MAKERS[name](tmp_path)
    ds = D.build_dataset(name, "train", root=tmp_path)
    assert type(ds) is cls and len(ds) == 2
    assert ds.num_classes == len(ds.class_names) == len(ds.palette)
    item = ds[1]
    assert item["image"].dtype == np.uint8 and item["image"].shape == (H, W, 3)
    assert item["mask"].dtype == np.int64 and np.array_equal(item["mask"], _tiled(expected))
    assert item["id"] == ds.samples[1][0]


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_same_items_as_reference(tmp_path, name):
    pytest.importorskip("cv2")
    pytest.importorskip("pandas")
    builder = pytest.importorskip("ssseg.modules.datasets.builder")
    MAKERS[name](tmp_path)
    cfg = {"type": REF_TYPES[name], "rootdir": str(tmp_path), "set": "train", "data_pipelines": [],
           "ignore_index": -100}
    reference = builder.DatasetBuilder().build(mode="TRAIN", logger_handle=None, dataset_cfg=cfg)
    ours = D.build_dataset(name, "train", root=tmp_path)
    assert len(reference) == len(ours)
    assert ours.class_names == list(reference.classnames)
    assert ours.palette == [list(c) for c in reference.palette]
    for i in range(len(ours)):
        expect, got = reference[i], ours[i]
        seg = expect["seg_target"].copy()
        seg[seg == -100] = 255
        assert np.array_equal(got["mask"], seg.astype(np.int64))
        assert np.array_equal(got["image"], expect["image"][..., ::-1])
        assert got["id"] == str(expect["id"])


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_missing_folder_is_one_line_error(tmp_path, name):
    MAKERS[name](tmp_path)
    shutil.rmtree(tmp_path / MASK_DIRS[name])
    with pytest.raises(FileNotFoundError) as err:
        D.build_dataset(name, "train", root=tmp_path)
    message = str(err.value)
    assert "\n" not in message and "missing folder" in message and str(tmp_path / MASK_DIRS[name]) in message


def test_missing_root_split_list_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="root folder .* does not exist"):
        D.VOC(tmp_path / "nowhere")
    make_voc(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing split list .*val\.txt"):
        D.VOC(tmp_path, "val")
    (tmp_path / "SegmentationClass" / "2007_000039.png").unlink()
    with pytest.raises(FileNotFoundError) as err:
        D.VOC(tmp_path, "train")
    missing = tmp_path / "SegmentationClass" / "2007_000039.png"
    assert "1 of 2 masks" in str(err.value) and str(missing) in str(err.value)


@pytest.mark.parametrize("name,bad", [("ade20k", 151), ("voc", 21), ("cityscapes", 34), ("pascalcontext59", 60),
                                      ("lip", 20)])
def test_bad_mask_is_one_line_error_naming_file(tmp_path, name, bad):
    cls, raw, _ = MAKERS[name](tmp_path)
    ds = cls(tmp_path, "train")
    path = ds.samples[0][2]
    _mask(path, list(raw) + [bad])
    with pytest.raises(ValueError) as err:
        ds[0]
    message = str(err.value)
    assert "\n" not in message and str(path) in message and f"[{bad}]" in message
    with pytest.raises(ValueError):
        ds.check_masks()
    assert ds[1]["mask"].shape == (H, W)


def test_bad_cocostuff_mat_value(tmp_path):
    make_cocostuff10k(tmp_path)
    ds = D.COCOStuff10k(tmp_path, "train")
    _mat(ds.samples[0][2], np.full((H, W), 183))
    with pytest.raises(ValueError, match=r"annotations.*\.mat has values \[183\]"):
        ds[0]


def test_rgb_mask_and_size_mismatch(tmp_path):
    make_lip(tmp_path)
    ds = D.LIP(tmp_path, "train")
    Image.new("RGB", (W, H)).save(ds.samples[0][2])
    with pytest.raises(ValueError, match=r"is a RGB image; expected single-channel"):
        ds[0]
    Image.new("L", (W + 1, H)).save(ds.samples[1][2])
    with pytest.raises(ValueError, match=r"is 13x8 but image .* is 12x8"):
        ds[1]


def test_palette_png_reads_indices(tmp_path):
    make_voc(tmp_path)
    path = tmp_path / "SegmentationClass" / "2007_000032.png"
    _mask(path, [0, 20, 255, 5], mode="P")
    assert Image.open(path).mode == "P"
    assert np.array_equal(D.VOC(tmp_path)[0]["mask"], _tiled([0, 20, 255, 5]))


def test_layout_fallbacks_without_split_lists(tmp_path):
    make_ade20k(tmp_path / "ade")
    (tmp_path / "ade" / "ADEChallengeData2016" / "train.txt").unlink()
    ade = D.ADE20K(tmp_path / "ade" / "ADEChallengeData2016", "train")
    assert [s[0] for s in ade.samples] == ["ADE_train_00000001", "ADE_train_00000002"]
    make_cityscapes(tmp_path / "cs")
    (tmp_path / "cs" / "train.txt").unlink()
    cs = D.Cityscapes(tmp_path / "cs", "train")
    assert [s[0] for s in cs.samples] == ["aachen/aachen_000000_000019_leftImg8bit",
                                          "bremen/bremen_000001_000019_leftImg8bit"]


def test_cityscapes_train_ids_and_voc_sbd(tmp_path):
    make_cityscapes(tmp_path / "cs")
    for i in ("aachen/aachen_000000_000019", "bremen/bremen_000001_000019"):
        _mask(tmp_path / "cs" / "gtFine" / "train" / f"{i}_gtFine_labelTrainIds.png", [0, 18, 255])
    ds = D.Cityscapes(tmp_path / "cs", "train", label_type="labelTrainIds")
    assert np.array_equal(ds[0]["mask"], _tiled([0, 18, 255]))
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    make_voc(voc)
    _list(voc / "ImageSets" / "Segmentation" / "aug.txt", ["2007_000039", "2008_000001"])  # mmseg: SBD extras
    _image(voc / "JPEGImages" / "2008_000001.jpg", 5)
    for i in ("2007_000032", "2007_000039", "2008_000001"):
        _mask(voc / "SegmentationClassAug" / f"{i}.png", [1, 2])
    ds = D.VOC(tmp_path, "train", sbd=True)
    assert [s[0] for s in ds.samples] == ["2007_000032", "2007_000039", "2008_000001"]
    assert np.array_equal(ds[2]["mask"], _tiled([1, 2]))
    _list(voc / "ImageSets" / "Segmentation" / "trainaug.txt", ["2008_000001"])  # SSSegmentation's list
    assert [s[0] for s in D.VOC(voc, "train", sbd=True).samples] == ["2008_000001"]


def test_build_dataset_by_folder_and_errors(tmp_path):
    make_ade20k(tmp_path / "ade")
    assert isinstance(D.build_dataset(tmp_path / "ade", "train"), D.ADE20K)
    make_pascalcontext(tmp_path / "ctx")
    with pytest.raises(ValueError, match="layouts of pascalcontext, pascalcontext59"):
        D.build_dataset(tmp_path / "ctx")
    with pytest.raises(ValueError, match="pass root="):
        D.build_dataset("ade20k")
    with pytest.raises(FileNotFoundError, match="neither a dataset name"):
        D.build_dataset("ade21k")
    with pytest.raises(ValueError, match="no known layout"):
        D.build_dataset(tmp_path)


def test_transform_recipe_is_seeded_per_epoch(tmp_path):
    make_ade20k(tmp_path)
    recipe = [["Resize", {"output_size": [24, 16], "scale_range": [0.5, 2.0]}],
              ["RandomCrop", {"crop_size": [8, 8]}], ["RandomFlip", {"prob": 0.5}], ["PhotoMetricDistortion", {}],
              ["Normalize", {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}], ["ToTensor", {}],
              ["Padding", {"output_size": [8, 8]}]]
    ds = D.build_dataset("ade20k", "train", root=tmp_path, transform=recipe, seed=3)
    a, b = ds[0], ds[0]
    assert a["image"].shape == (3, 8, 8) and a["mask"].shape == (8, 8) and a["mask"].dtype == torch.int64
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    runs = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        runs.append(ds[0]["image"])
    assert any(not torch.equal(runs[0], r) for r in runs[1:])
    ds.set_epoch(0)
    assert torch.equal(ds[0]["image"], runs[0])
    plain = D.ADE20K(tmp_path, "train", transform=lambda item: {**item, "seen": True})
    assert plain[0]["seen"]


def test_folder_dataset_round_trip(tmp_path):
    shapes = ShapesDataset(2, size=(H, W), num_classes=4, seed=1)
    items = [shapes[i] for i in range(2)]
    items[1]["mask"][0, :3] = 255
    D.FolderDataset.write(tmp_path, items, shapes.class_names)
    ds = D.build_dataset(tmp_path)
    assert isinstance(ds, D.FolderDataset) and ds.class_names == shapes.class_names and len(ds) == 2
    for item, back in zip(items, (ds[0], ds[1])):
        assert back["id"] == item["id"]
        assert np.array_equal(back["image"], item["image"]) and np.array_equal(back["mask"], item["mask"])
    with pytest.raises(ValueError, match="mask values must be"):
        D.FolderDataset.write(tmp_path / "bad", [{"image": items[0]["image"], "mask": items[0]["mask"] + 7}], ["a"])
    with pytest.raises(FileNotFoundError, match="missing class list"):
        D.FolderDataset(tmp_path / "bad2")
    _mask(tmp_path / "masks" / f"{items[0]['id']}.png", [0, 4])
    with pytest.raises(ValueError, match=r"has values \[4\] outside the 4 classes"):
        ds[0]


def test_read_mat_matches_scipy(tmp_path):
    sio = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(0)
    arrays = {"S": rng.integers(0, 183, (5, 7)).astype(np.uint16), "T": rng.normal(size=(3, 4)),
              "U": rng.integers(0, 255, (2, 9)).astype(np.uint8), "V": np.arange(6, dtype=np.int32).reshape(2, 3)}
    for compress in (False, True):
        path = tmp_path / f"a{compress}.mat"
        sio.savemat(path, arrays, do_compression=compress)
        for name, array in arrays.items():
            got = D.read_mat(path, name)
            assert got.shape == array.shape and np.array_equal(got, array)
        with pytest.raises(ValueError, match="has no variable 'X'"):
            D.read_mat(path, "X")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file" * 20)
    with pytest.raises(ValueError, match="not a little-endian MATLAB v5"):
        D.read_mat(tmp_path / "junk.mat", "S")


def test_shapes_dataset_is_deterministic():
    ds = ShapesDataset(12, size=(32, 48), num_classes=4, seed=0)
    again = ShapesDataset(12, size=(32, 48), num_classes=4, seed=0)
    other = ShapesDataset(12, size=(32, 48), num_classes=4, seed=1)
    assert len(ds) == 12 and ds.class_names == ["background", "circle", "square", "triangle"]
    seen = set()
    for i in range(len(ds)):
        a, b = ds[i], again[i]
        assert a["image"].shape == (32, 48, 3) and a["image"].dtype == np.uint8 and a["mask"].dtype == np.int64
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
        labels = set(np.unique(a["mask"]).tolist())
        assert 0 in labels and len(labels) >= 2 and labels <= {0, 1, 2, 3}
        seen |= labels
    assert seen == {0, 1, 2, 3}
    assert not np.array_equal(ds[0]["image"], other[0]["image"])
    out = ShapesDataset(2, num_classes=7, transform=[["RandomFlip", {"prob": 1.0}], ["ToTensor", {}]])[0]
    assert out["image"].shape == (3, 64, 64) and out["mask"].max() < 7
