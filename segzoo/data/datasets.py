"""Segmentation datasets in their standard on-disk layouts, and a folder dataset.

Each class reads the layout SSSegmentation 1.7.0's dataset class of the same dataset reads
(``ssseg/modules/datasets/*.py``), maps the stored labels to train ids the same way and uses
``255`` (:data:`IGNORE_INDEX`) where the reference uses ``-100``. A dataset checks its folders,
split list and the presence of every listed file when it is built, and each mask when it is read;
each problem is one error whose one-line message names the folder or file.

An item is ``{"image": uint8 HxWx3 RGB, "mask": int64 HxW, "id": str}`` (numpy arrays), or what the
``transform`` makes of it (a :func:`~segzoo.data.transforms.build_pipeline` recipe list is built
for you). Random transforms get a ``torch.Generator`` seeded from ``(seed, epoch, index)``, so
a run is reproducible and resumable: call :meth:`SegmentationDataset.set_epoch` every epoch.

Differences from the reference: images are decoded with Pillow (RGB, EXIF orientation applied as
``cv2.imread`` does) rather than OpenCV (BGR); palette ("P" mode) PNG masks are read as their
indices (``cv2.IMREAD_GRAYSCALE`` would read their colours' luminance); COCO-Stuff-10k's ``.mat``
annotations are read by a small built-in MAT v5 reader (no scipy).
"""
from __future__ import annotations

import inspect
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from ._meta import bit_palette, dataset_info
from .transforms import IGNORE_INDEX, build_pipeline

__all__ = ["DATASETS", "IGNORE_INDEX", "register_dataset", "build_dataset", "list_datasets", "SegmentationDataset",
           "ADE20K", "Cityscapes", "VOC", "PascalContext", "PascalContext59", "COCOStuff10k", "LIP", "FolderDataset",
           "read_mat"]

DATASETS: dict[str, type] = {}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def register_dataset(name: str) -> Callable[[type], type]:
    """Class decorator: make a dataset buildable by ``name`` (also the key of its class names)."""
    def deco(cls: type) -> type:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        cls.name = name
        DATASETS[name] = cls
        return cls
    return deco


def list_datasets() -> list[str]:
    """The registered dataset names."""
    return sorted(DATASETS)


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------
_MAT_TYPES = {1: "i1", 2: "u1", 3: "<i2", 4: "<u2", 5: "<i4", 6: "<u4", 7: "<f4", 9: "<f8", 12: "<i8", 13: "<u8"}


def _mat_elements(buf: bytes, pos: int, end: int):
    """(type, payload) of the MAT v5 data elements in ``buf[pos:end]``."""
    while pos + 8 <= end:
        dtype, nbytes = struct.unpack_from("<II", buf, pos)
        if dtype >> 16:  # small data element: 2-byte size, 2-byte type, 4 bytes of data
            dtype, nbytes = dtype & 0xFFFF, dtype >> 16
            yield dtype, buf[pos + 4:pos + 4 + nbytes]
            pos += 8
            continue
        yield dtype, buf[pos + 8:pos + 8 + nbytes]
        pos += 8 + nbytes
        if dtype != 15:
            pos += -nbytes % 8


def read_mat(path: str | os.PathLike, name: str) -> np.ndarray:
    """The numeric array ``name`` of a MATLAB v5 ``.mat`` file (compressed or not)."""
    buf = Path(path).read_bytes()
    if len(buf) < 128 or buf[126:128] != b"IM":
        raise ValueError(f"{path} is not a little-endian MATLAB v5 .mat file")
    for dtype, payload in _mat_elements(buf, 128, len(buf)):
        if dtype == 15:
            payload = zlib.decompress(payload)
            dtype, nbytes = struct.unpack_from("<II", payload, 0)
            payload = payload[8:8 + nbytes]
        if dtype != 14:
            continue
        parts = list(_mat_elements(payload, 0, len(payload)))
        if len(parts) < 4:
            continue
        dims = np.frombuffer(parts[1][1], dtype=_MAT_TYPES[parts[1][0]]).astype(int)
        var = parts[2][1].decode("ascii", "replace")
        if var != name:
            continue
        if parts[3][0] not in _MAT_TYPES:
            raise ValueError(f"{path}: variable {name!r} is not a numeric array")
        data = np.frombuffer(parts[3][1], dtype=_MAT_TYPES[parts[3][0]])
        return data.reshape(tuple(dims), order="F")
    raise ValueError(f"{path} has no variable {name!r}")


def read_image(path: Path) -> np.ndarray:
    """``uint8`` ``HxWx3`` RGB image, EXIF orientation applied."""
    try:
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except OSError as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


def read_label_png(path: Path) -> np.ndarray:
    """The stored labels of a single-channel (or palette) PNG."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
                raise ValueError(f"mask {path} is a {im.mode} image; expected single-channel labels (L, P or I mode)")
            return np.asarray(im)
    except OSError as err:
        raise ValueError(f"cannot read mask {path}: {err}") from None


def _read_list(path: Path) -> list[str]:
    ids = []
    for line in path.read_text().splitlines():
        line = line.split(",")[0].strip()
        if line:
            ids.append(line)
    return ids


def _shift_table(num_classes: int, zero_ignored: bool = True) -> np.ndarray:
    """Raw value -> train id: 0 -> ignore, k -> k-1 for 1..num_classes, 255 -> ignore, others invalid."""
    table = np.full(65536, -1, dtype=np.int64)
    table[1:num_classes + 1] = np.arange(num_classes)
    if zero_ignored:
        table[0] = IGNORE_INDEX
    table[255] = IGNORE_INDEX
    return table


def _identity_table(num_classes: int) -> np.ndarray:
    """Raw value -> train id: 0..num_classes-1 kept, 255 -> ignore, others invalid."""
    table = np.full(65536, -1, dtype=np.int64)
    table[:num_classes] = np.arange(num_classes)
    table[255] = IGNORE_INDEX
    return table


# ---------------------------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------------------------
class SegmentationDataset(torch.utils.data.Dataset):
    """A list of ``(id, image path, mask path)`` samples read as segzoo items (see the module docstring).

    Subclasses set ``title`` and implement :meth:`find` (the samples, after checking the layout)
    and :meth:`label_table` (raw stored value -> train id, ``-1`` for an invalid value).
    """

    name = "dataset"
    title = "dataset"
    ignore_index = IGNORE_INDEX
    layout = ""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Any = None, *, seed: int = 0,
                 meta: dict | None = None):
        self.root = Path(root).expanduser()
        self.split = split
        self.seed = int(seed)
        self.epoch = 0
        if not self.root.is_dir():
            self.fail(f"root folder {self.root} does not exist", FileNotFoundError)
        meta = meta if meta is not None else dataset_info(self.name)
        self.class_names = list(meta["class_names"])
        self.palette = [list(c) for c in meta["palette"]]
        self.num_classes = int(meta["num_classes"])
        self.transform = build_pipeline(transform) if isinstance(transform, (list, tuple)) else transform
        self._seeded = self.transform is not None and _takes_generator(self.transform)
        self.samples = self.find()
        if not self.samples:
            self.fail(f"split {split!r} under {self.root} lists no samples", ValueError)
        self._table = self.label_table()

    # -- layout ---------------------------------------------------------------------------------
    def fail(self, message: str, kind: type = ValueError):
        raise kind(f"{self.title}: {message}")

    def folder(self, path: Path) -> Path:
        """``path``, checked to be a folder."""
        if not path.is_dir():
            hint = f" (expected layout: {self.layout})" if self.layout else ""
            self.fail(f"missing folder {path}{hint}", FileNotFoundError)
        return path

    def listfile(self, path: Path) -> list[str]:
        """The ids of a split list, checked to exist."""
        if not path.is_file():
            self.fail(f"missing split list {path} for split {self.split!r}", FileNotFoundError)
        return _read_list(path)

    def checked(self, samples: list[tuple[str, Path, Path]], listed_in: str) -> list[tuple[str, Path, Path]]:
        """``samples``, checked that every image and mask exists."""
        for what, k in (("images", 1), ("masks", 2)):
            missing = [s[k] for s in samples if not s[k].is_file()]
            if missing:
                self.fail(f"{len(missing)} of {len(samples)} {what} listed in {listed_in} are missing, "
                          f"first: {missing[0]}", FileNotFoundError)
        return samples

    def find(self) -> list[tuple[str, Path, Path]]:
        raise NotImplementedError

    def label_table(self) -> np.ndarray | None:
        return _identity_table(self.num_classes)

    # -- items ----------------------------------------------------------------------------------
    def read_mask(self, path: Path) -> np.ndarray:
        """The stored labels of ``path``."""
        return read_label_png(path)

    def encode(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Train ids (``int64``, 255 = ignore) of the stored labels ``raw`` of mask ``path``."""
        raw = np.asarray(raw)
        if raw.ndim != 2:
            self.fail(f"mask {path} has shape {raw.shape}; expected HxW labels")
        if raw.dtype.kind == "f":
            if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
                self.fail(f"mask {path} has non-integer values")
        raw = raw.astype(np.int64)
        bad = (raw < 0) | (raw >= len(self._table))
        mask = self._table[np.where(bad, 0, raw)]
        bad |= mask < 0
        if bad.any():
            values = np.unique(raw[bad])
            shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
            valid = np.flatnonzero(self._table >= 0)
            self.fail(f"mask {path} has values [{shown}] outside the {self.num_classes} classes and ignore "
                      f"{IGNORE_INDEX} (valid stored values: {_ranges(valid)})")
        return mask

    def load(self, index: int) -> dict:
        """Item ``index`` before the transform."""
        sid, image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        mask = self.encode(self.read_mask(mask_path), mask_path)
        if mask.shape != image.shape[:2]:
            self.fail(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image {image_path} is "
                      f"{image.shape[1]}x{image.shape[0]}")
        return {"image": image, "mask": mask, "id": sid}

    def generator(self, index: int) -> torch.Generator:
        """The random stream of item ``index`` in the current epoch."""
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def set_epoch(self, epoch: int) -> None:
        """Select the random streams of ``epoch`` (call before each epoch for reproducible augmentation)."""
        self.epoch = int(epoch)

    def check_masks(self) -> None:
        """Read every mask and raise on the first malformed one (slow: reads the whole dataset's masks)."""
        for _, _, mask_path in self.samples:
            self.encode(self.read_mask(mask_path), mask_path)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.title}: index {index} out of range for {len(self)} samples")
        item = self.load(index)
        if self.transform is not None:
            item = self.transform(item, generator=self.generator(index)) if self._seeded else self.transform(item)
        return item

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, {len(self)} samples)"

    @classmethod
    def detect(cls, root: Path) -> bool:
        """Whether ``root`` looks like this dataset's layout."""
        return False


def _takes_generator(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "generator" or p.kind is p.VAR_KEYWORD for p in params)


def _ranges(values: np.ndarray) -> str:
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(f"{start}" if start == v else f"{start}..{v}")
            start = None
    return ", ".join(out)


# ---------------------------------------------------------------------------------------------
# standard datasets
# ---------------------------------------------------------------------------------------------
@register_dataset("ade20k")
class ADE20K(SegmentationDataset):
    """ADE20K (SceneParsing, 150 classes): ``ADEChallengeData2016/{images,annotations}/{training,validation}``.

    Stored 0 (other) becomes ignore and ``k`` becomes ``k - 1``. The split list
    ``ADEChallengeData2016/<split>.txt`` (SSSegmentation's) is used when present, else every image
    of the split folder.
    """

    title = "ADE20K"
    layout = "ADEChallengeData2016/images/<training|validation>/*.jpg + annotations/<...>/*.png"
    SPLITS = {"train": "training", "val": "validation", "test": "testing",
              "training": "training", "validation": "validation", "testing": "testing"}

    def base(self) -> Path:
        nested = self.root / "ADEChallengeData2016"
        return nested if nested.is_dir() else self.root

    def find(self):
        if self.split not in self.SPLITS:
            self.fail(f"unknown split {self.split!r}; expected one of train, val, test")
        base, folder = self.base(), self.SPLITS[self.split]
        images = self.folder(base / "images" / folder)
        masks = self.folder(base / "annotations" / folder)
        listfile = base / f"{self.split}.txt"
        if listfile.is_file():
            ids, listed = _read_list(listfile), str(listfile)
        else:
            ids, listed = sorted(p.stem for p in images.glob("*.jpg")), str(images)
        return self.checked([(i, images / f"{i}.jpg", masks / f"{i}.png") for i in ids], listed)

    def label_table(self):
        return _shift_table(self.num_classes)

    @classmethod
    def detect(cls, root):
        return (root / "ADEChallengeData2016").is_dir() or ((root / "images" / "training").is_dir()
                                                             and (root / "annotations" / "training").is_dir())


# Cityscapes label id -> train id (the 19 evaluated classes), as cityscapesScripts' labels table
_CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                         26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


@register_dataset("cityscapes")
class Cityscapes(SegmentationDataset):
    """Cityscapes fine annotations: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and
    ``gtFine/<split>/<city>/*_gtFine_labelIds.png`` (label ids 0..33 mapped to the 19 train ids,
    the rest ignored); ``label_type="labelTrainIds"`` reads ``*_gtFine_labelTrainIds.png`` instead.

    The split list ``<split>.txt`` (SSSegmentation's: ``<city>/<name>_leftImg8bit`` per line) is used
    when present, else every image of the split folder.
    """

    title = "Cityscapes"
    layout = "leftImg8bit/<split>/<city>/*_leftImg8bit.png + gtFine/<split>/<city>/*_gtFine_labelIds.png"

    def __init__(self, root, split="train", transform=None, *, label_type: str = "labelIds", seed: int = 0):
        if label_type not in ("labelIds", "labelTrainIds"):
            raise ValueError(f"Cityscapes: label_type must be 'labelIds' or 'labelTrainIds', got {label_type!r}")
        self.label_type = label_type
        super().__init__(root, split, transform, seed=seed)

    def find(self):
        images = self.folder(self.root / "leftImg8bit" / self.split)
        masks = self.folder(self.root / "gtFine" / self.split)
        listfile = self.root / f"{self.split}.txt"
        if listfile.is_file():
            ids, listed = _read_list(listfile), str(listfile)
        else:
            ids = sorted(str(p.relative_to(images).with_suffix("")) for p in images.glob("*/*_leftImg8bit.png"))
            listed = str(images)
        suffix = f"gtFine_{self.label_type}"
        return self.checked([(i, images / f"{i}.png", masks / f"{i.replace('leftImg8bit', suffix)}.png")
                             for i in ids], listed)

    def label_table(self):
        if self.label_type == "labelTrainIds":
            return _identity_table(self.num_classes)
        table = np.full(65536, -1, dtype=np.int64)
        table[:34] = IGNORE_INDEX
        table[255] = IGNORE_INDEX
        for label_id, train_id in _CITYSCAPES_TRAIN_IDS.items():
            table[label_id] = train_id
        return table

    @classmethod
    def detect(cls, root):
        return (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir()


def _voc_base(root: Path, year: str) -> Path:
    nested = root / "VOCdevkit" / f"VOC{year}"
    return nested if nested.is_dir() else root


@register_dataset("voc")
class VOC(SegmentationDataset):
    """PASCAL VOC 2012 (21 classes, 255 = boundary/ignore): ``JPEGImages``, ``SegmentationClass`` and
    ``ImageSets/Segmentation/<split>.txt`` (SSSegmentation trains on ``trainaug``: SBD merged into
    ``SegmentationClass``).

    ``sbd=True`` reads the augmented masks from ``SegmentationClassAug`` (the SBD "aug" layout); its
    train split lists ``trainaug.txt`` if present, else ``train.txt`` and ``aug.txt`` together.
    """

    title = "PASCAL VOC"
    layout = "JPEGImages/*.jpg + SegmentationClass/*.png + ImageSets/Segmentation/<split>.txt"

    def __init__(self, root, split="train", transform=None, *, sbd: bool = False, seed: int = 0):
        self.sbd = bool(sbd)
        super().__init__(root, split, transform, seed=seed)

    def find(self):
        base = _voc_base(self.root, "2012")
        images = self.folder(base / "JPEGImages")
        masks = self.folder(base / ("SegmentationClassAug" if self.sbd else "SegmentationClass"))
        sets = self.folder(base / "ImageSets" / "Segmentation")
        listfile = sets / f"{self.split}.txt"
        ids = None
        if self.sbd and self.split in ("train", "trainaug"):
            if (sets / "trainaug.txt").is_file():
                listfile = sets / "trainaug.txt"
            elif (sets / "aug.txt").is_file():  # mmseg's layout: train.txt + the SBD extras in aug.txt
                extra = _read_list(sets / "aug.txt")
                ids = list(dict.fromkeys((_read_list(listfile) if listfile.is_file() else []) + extra))
                listfile = sets / "aug.txt"
        ids = self.listfile(listfile) if ids is None else ids
        return self.checked([(i, images / f"{i}.jpg", masks / f"{i}.png") for i in ids], str(listfile))

    @classmethod
    def detect(cls, root):
        base = _voc_base(root, "2012")
        return (base / "JPEGImages").is_dir() and (base / "SegmentationClass").is_dir()


@register_dataset("pascalcontext")
class PascalContext(SegmentationDataset):
    """PASCAL Context, 60 classes (0 = background): VOC2010's ``JPEGImages``, ``SegmentationClassContext``
    and ``ImageSets/SegmentationContext/<split>.txt``."""

    title = "PASCAL Context"
    layout = "JPEGImages/*.jpg + SegmentationClassContext/*.png + ImageSets/SegmentationContext/<split>.txt"

    def find(self):
        base = _voc_base(self.root, "2010")
        images = self.folder(base / "JPEGImages")
        masks = self.folder(base / "SegmentationClassContext")
        listfile = self.folder(base / "ImageSets" / "SegmentationContext") / f"{self.split}.txt"
        ids = self.listfile(listfile)
        return self.checked([(i, images / f"{i}.jpg", masks / f"{i}.png") for i in ids], str(listfile))

    @classmethod
    def detect(cls, root):
        base = _voc_base(root, "2010")
        return (base / "JPEGImages").is_dir() and (base / "SegmentationClassContext").is_dir()


@register_dataset("pascalcontext59")
class PascalContext59(PascalContext):
    """PASCAL Context, 59 classes: the 60-class layout with stored 0 (background) ignored and ``k`` -> ``k - 1``."""

    title = "PASCAL Context 59"

    def label_table(self):
        return _shift_table(self.num_classes)


@register_dataset("cocostuff10k")
class COCOStuff10k(SegmentationDataset):
    """COCO-Stuff-10k v1.1 (182 classes): ``images/*.jpg``, ``annotations/*.mat`` (variable ``S``) and
    ``imageLists/<split>.txt``; stored 0 (unlabeled) and 255 are ignored and ``k`` -> ``k - 1``.
    A ``.png`` annotation of the same name is read where there is no ``.mat``."""

    title = "COCO-Stuff-10k"
    layout = "images/*.jpg + annotations/*.mat + imageLists/<split>.txt"

    def find(self):
        images = self.folder(self.root / "images")
        masks = self.folder(self.root / "annotations")
        listfile = self.root / "imageLists" / f"{self.split}.txt"
        ids = self.listfile(listfile)
        samples = []
        for i in ids:
            mask = masks / f"{i}.mat"
            if not mask.is_file() and (masks / f"{i}.png").is_file():
                mask = masks / f"{i}.png"
            samples.append((i, images / f"{i}.jpg", mask))
        return self.checked(samples, str(listfile))

    def read_mask(self, path):
        if path.suffix == ".mat":
            try:
                return read_mat(path, "S")
            except (ValueError, zlib.error, struct.error) as err:
                self.fail(f"cannot read mask {path}: {err}")
        return read_label_png(path)

    def label_table(self):
        return _shift_table(self.num_classes)

    @classmethod
    def detect(cls, root):
        return (root / "imageLists").is_dir() and (root / "annotations").is_dir()


@register_dataset("lip")
class LIP(SegmentationDataset):
    """LIP human parsing (20 classes, 0 = background): ``<split>_images/*.jpg``,
    ``<split>_segmentations/*.png`` and ``<split>_id.txt`` (``test`` reads ``testing_*``)."""

    title = "LIP"
    layout = "<split>_images/*.jpg + <split>_segmentations/*.png + <split>_id.txt"
    SPLITS = {"train": "train", "val": "val", "test": "testing"}

    def find(self):
        folder = self.SPLITS.get(self.split, self.split)
        images = self.folder(self.root / f"{folder}_images")
        masks = self.folder(self.root / f"{folder}_segmentations")
        listfile = self.root / f"{self.split}_id.txt"
        ids = self.listfile(listfile)
        return self.checked([(i, images / f"{i}.jpg", masks / f"{i}.png") for i in ids], str(listfile))

    @classmethod
    def detect(cls, root):
        return (root / "train_images").is_dir() or (root / "val_images").is_dir()


# ---------------------------------------------------------------------------------------------
# folder dataset
# ---------------------------------------------------------------------------------------------
@register_dataset("folder")
class FolderDataset(SegmentationDataset):
    """Your own data: ``images/<name>.<jpg|png|...>`` with ``masks/<name>.png`` (train ids 0..C-1,
    255 = ignore) and the class names in ``classes`` or ``classes.txt`` (one per line).

    With a ``split``, ``images/<split>`` and ``masks/<split>`` are read where they exist.
    :meth:`write` saves items in this layout.
    """

    title = "folder dataset"
    layout = "images/<name>.jpg|png + masks/<name>.png + classes.txt"

    def __init__(self, root, split: str | None = None, transform=None, *, classes: Sequence[str] | None = None,
                 palette: Sequence[Sequence[int]] | None = None, seed: int = 0):
        root = Path(root).expanduser()
        self.title = f"folder dataset {root}"
        if classes is None:
            listfile = root / "classes.txt"
            if not listfile.is_file():
                raise FileNotFoundError(f"{self.title}: missing class list {listfile} (or pass classes=[...])")
            classes = [c.strip() for c in listfile.read_text().splitlines() if c.strip()]
        classes = list(classes)
        if not classes:
            raise ValueError(f"{self.title}: the class list is empty")
        meta = {"num_classes": len(classes), "class_names": classes,
                "palette": [list(c) for c in palette] if palette is not None else bit_palette(len(classes))}
        if len(meta["palette"]) != len(classes):
            raise ValueError(f"{self.title}: {len(meta['palette'])} palette colours for {len(classes)} classes")
        super().__init__(root, split, transform, seed=seed, meta=meta)

    def find(self):
        images, masks = self.folder(self.root / "images"), self.folder(self.root / "masks")
        if self.split is not None and (images / self.split).is_dir():
            images, masks = images / self.split, self.folder(masks / self.split)
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return self.checked([(p.stem, p, masks / f"{p.stem}.png") for p in files], str(images))

    @staticmethod
    def write(root: str | os.PathLike, items, classes: Sequence[str], split: str | None = None) -> Path:
        """Save ``items`` (``{"image": uint8 HxWx3, "mask": HxW train ids, "id": name}``) and ``classes``
        as a folder dataset under ``root`` (PNG images: lossless); returns ``root``."""
        root = Path(root).expanduser()
        images, masks = root / "images", root / "masks"
        if split is not None:
            images, masks = images / split, masks / split
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
        for n, item in enumerate(items):
            name = str(item.get("id", f"{n:06d}"))
            mask = np.asarray(item["mask"])
            if np.any((mask < 0) | ((mask >= len(classes)) & (mask != IGNORE_INDEX))):
                raise ValueError(f"item {name}: mask values must be 0..{len(classes) - 1} or {IGNORE_INDEX}")
            Image.fromarray(np.asarray(item["image"], dtype=np.uint8)).save(images / f"{name}.png")
            Image.fromarray(mask.astype(np.uint8), mode="L").save(masks / f"{name}.png")
        return root

    @classmethod
    def detect(cls, root):
        return (root / "images").is_dir() and (root / "masks").is_dir()


# ---------------------------------------------------------------------------------------------
# builder
# ---------------------------------------------------------------------------------------------
def build_dataset(name_or_root: str | os.PathLike, split: str = "train", *, root: str | os.PathLike | None = None,
                  transform: Any = None, **kwargs) -> SegmentationDataset:
    """A dataset by registered name (``build_dataset("ade20k", "val", root=...)``) or by folder
    (``build_dataset("/data/ADEChallengeData2016", "val")``: the layout found there decides).

    ``transform`` may be a recipe list (built with :func:`~segzoo.data.transforms.build_pipeline`);
    other keyword arguments go to the dataset class.
    """
    key = str(name_or_root)
    if key in DATASETS:
        if root is None:
            raise ValueError(f"build_dataset({key!r}): pass root= (the dataset's folder)")
        return DATASETS[key](root, split, transform, **kwargs)
    path = Path(key).expanduser()
    if root is not None:
        raise ValueError(f"unknown dataset {key!r}; known: {', '.join(list_datasets())}")
    if not path.is_dir():
        raise FileNotFoundError(f"{key!r} is neither a dataset name ({', '.join(list_datasets())}) nor a folder")
    found = [n for n, cls in DATASETS.items() if cls.detect(path)]
    if len(found) != 1:
        what = "no known layout" if not found else f"the layouts of {', '.join(found)}"
        raise ValueError(f"{path} has {what}; call build_dataset(name, split, root=path) with one of "
                         f"{', '.join(list_datasets())}")
    return DATASETS[found[0]](path, split, transform, **kwargs)
