"""segzoo.data.transforms against SSSegmentation 1.7.0's pipelines (OpenCV based) on the same inputs.

The reference works on OpenCV's BGR images and ignores -100; segzoo on RGB images and ignores 255:
every comparison flips channels and maps the ignore label. Random transforms are compared by feeding
the reference (through a scripted ``numpy.random``) the very draws segzoo took from its generator.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segzoo.data import transforms as T

cv2 = pytest.importorskip("cv2")
ref = pytest.importorskip("ssseg.modules.datasets.pipelines.transforms")


def _rgb(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _sample(image_rgb, mask):
    return T.to_sample({"image": image_rgb, "mask": mask})


def _ref_meta(image_rgb, mask):
    seg = mask.astype(np.float32)
    seg[mask == 255] = -100
    return {"image": np.ascontiguousarray(image_rgb[..., ::-1]), "seg_target": seg}


def _ours_as_ref(sample):
    """Our sample in the reference's conventions: HxWx3 BGR image (if 3-D CHW), float mask with -100."""
    image = sample["image"]
    image = image.permute(1, 2, 0).flip(-1).numpy()
    seg = sample["mask"].numpy().astype(np.float32)
    seg[seg == 255] = -100
    return image, seg


# ---------------------------------------------------------------------------------------------
# OpenCV kernels
# ---------------------------------------------------------------------------------------------
SIZES = [(37, 53, 71, 100), (64, 96, 30, 41), (50, 70, 25, 35), (33, 47, 129, 200), (120, 90, 61, 47),
         (17, 17, 17, 40), (9, 200, 31, 3), (1, 5, 4, 9), (48, 64, 48, 64)]


@pytest.mark.parametrize("h,w,dh,dw", SIZES)
def test_resize_image_bit_exact_with_cv2(h, w, dh, dw):
    rng = np.random.default_rng(h * w + dh)
    img = _rgb(rng, h, w)
    expect = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR)
    got = T.resize_image(torch.from_numpy(img).permute(2, 0, 1), (dh, dw)).permute(1, 2, 0).numpy()
    assert np.array_equal(got, expect)


def test_resize_image_random_shapes_bit_exact():
    rng = np.random.default_rng(7)
    for _ in range(40):
        h, w = rng.integers(2, 60, 2)
        dh, dw = rng.integers(2, 120, 2)
        img = _rgb(rng, h, w)
        expect = cv2.resize(img, (int(dw), int(dh)), interpolation=cv2.INTER_LINEAR)
        got = T.resize_image(torch.from_numpy(img).permute(2, 0, 1), (dh, dw)).permute(1, 2, 0).numpy()
        assert np.array_equal(got, expect), (h, w, dh, dw)


def test_resize_float_image_close_to_cv2():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(23, 31, 3)).astype(np.float32)
    expect = cv2.resize(img, (50, 40), interpolation=cv2.INTER_LINEAR)
    got = T.resize_image(torch.from_numpy(img).permute(2, 0, 1), (40, 50)).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, expect, atol=1e-5)


def test_torch_bilinear_is_not_exact():
    """Why resize_image exists: torch's float bilinear + rounding is off by one level on ~12% of pixels."""
    rng = np.random.default_rng(0)
    img = _rgb(rng, 37, 53)
    expect = cv2.resize(img, (100, 71), interpolation=cv2.INTER_LINEAR).astype(int)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    t = torch.nn.functional.interpolate(x, size=(71, 100), mode="bilinear", align_corners=False)
    diff = np.abs(t.round()[0].permute(1, 2, 0).numpy().astype(int) - expect)
    assert diff.max() == 1 and 0.05 < (diff > 0).mean() < 0.2


def test_resize_mask_exact_with_cv2_nearest():
    rng = np.random.default_rng(3)
    for _ in range(60):
        h, w = rng.integers(1, 70, 2)
        dh, dw = rng.integers(1, 150, 2)
        m = rng.integers(0, 256, (h, w), dtype=np.uint8)
        expect = cv2.resize(m, (int(dw), int(dh)), interpolation=cv2.INTER_NEAREST)
        got = T.resize_mask(torch.from_numpy(m).long(), (dh, dw)).numpy()
        assert np.array_equal(got, expect), (h, w, dh, dw)


def test_hsv_conversions_bit_exact():
    rng = np.random.default_rng(0)
    img = _rgb(rng, 16, 64)
    img[:4] = img[:4, :, :1]  # greys
    img[4:6, :, 0] = img[4:6, :, 1]  # ties
    hsv = T.rgb_to_hsv_cv2(torch.from_numpy(img).permute(2, 0, 1).contiguous())
    assert np.array_equal(hsv.permute(1, 2, 0).numpy(), cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
    # every (h, s, v) with v in steps of 5, rows of 64 pixels (OpenCV's vector path throughout)
    grid = np.stack(np.meshgrid(np.arange(181), np.arange(256), np.arange(0, 256, 5), indexing="ij"), -1)
    grid = grid.reshape(-1, 64, 3).astype(np.uint8)
    got = T.hsv_to_rgb_cv2(torch.from_numpy(grid).permute(2, 0, 1).contiguous()).permute(1, 2, 0).numpy()
    assert np.array_equal(got, cv2.cvtColor(grid, cv2.COLOR_HSV2RGB))


# ---------------------------------------------------------------------------------------------
# deterministic transforms
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    dict(output_size=(2048, 512), keep_ratio=True, scale_range=None),
    dict(output_size=(64, 40), keep_ratio=True, scale_range=None),
    dict(output_size=(30, 80), keep_ratio=False, scale_range=None),
    dict(output_size=(40, 30), keep_ratio=True, scale_range=None, min_size=50),
])
@pytest.mark.parametrize("hw", [(45, 61), (61, 45)])
def test_resize_transform_parity(kwargs, hw):
    rng = np.random.default_rng(0)
    img, mask = _rgb(rng, *hw), rng.integers(0, 5, hw)
    mask[:3] = 255
    out = T.Resize(**kwargs)(_sample(img, mask))
    expect = ref.Resize(**kwargs)(_ref_meta(img, mask))
    image, seg = _ours_as_ref(out)
    assert np.array_equal(image, expect["image"])
    assert np.array_equal(seg, expect["seg_target"])


def test_normalize_parity():
    rng = np.random.default_rng(0)
    img, mask = _rgb(rng, 20, 30), np.zeros((20, 30), dtype=np.int64)
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    for to_rgb in (True, False):
        out = T.Normalize(mean, std, to_rgb=to_rgb)(_sample(img, mask))["image"]
        expect = ref.Normalize(mean, std, to_rgb=to_rgb)(_ref_meta(img, mask))["image"]
        assert out.dtype == torch.float32
        assert np.array_equal(out.permute(1, 2, 0).numpy(), expect)


@pytest.mark.parametrize("output_size", [(40, 50), (50, 40), (16, 20), (33, 33)])
def test_padding_parity(output_size):
    rng = np.random.default_rng(0)
    img, mask = _rgb(rng, 25, 31), rng.integers(0, 4, (25, 31))
    out = T.ToTensor()(T.Padding(output_size, data_type="tensor")(_sample(img, mask)))
    meta = ref.ToTensor()(_ref_meta(img, mask))
    meta["image"] = meta["image"][[2, 1, 0]]  # to RGB
    expect = ref.Padding(output_size, data_type="tensor")(meta)
    assert torch.equal(out["image"], expect["image"])
    seg = expect["seg_target"].clone()
    seg[seg == -100] = 255
    assert torch.equal(out["mask"], seg.long())
    if output_size[0] >= 25 and output_size[1] >= 31 or output_size[0] >= 31 and output_size[1] >= 25:
        # the numpy path (cv2.copyMakeBorder) pads the same way
        expect_np = ref.Padding(output_size, data_type="numpy")(_ref_meta(img, mask))
        image, seg_np = _ours_as_ref(T.Padding(output_size, data_type="numpy")(_sample(img, mask)))
        assert np.array_equal(image, expect_np["image"]) and np.array_equal(seg_np, expect_np["seg_target"])


def test_flip_and_crop_with_given_offsets():
    rng = np.random.default_rng(0)
    img, mask = _rgb(rng, 20, 30), rng.integers(0, 4, (20, 30))
    flipped = T.RandomFlip(1.0).flip(_sample(img, mask))
    meta = ref.RandomFlip.flip("seg_target", ref.RandomFlip.flip("image", _ref_meta(img, mask)))
    image, seg = _ours_as_ref(flipped)
    assert np.array_equal(image, meta["image"]) and np.array_equal(seg, meta["seg_target"])
    cropped = T.crop(_sample(img, mask), 3, 7, 11, 13)
    image, seg = _ours_as_ref(cropped)
    m = _ref_meta(img, mask)
    assert np.array_equal(image, ref.RandomCrop.crop(m["image"], 3, 7, 11, 13))
    assert np.array_equal(seg, ref.RandomCrop.crop(m["seg_target"], 3, 7, 11, 13))


def test_edge_extractor_parity():
    rng = np.random.default_rng(0)
    mask = np.repeat(np.repeat(rng.integers(0, 3, (6, 8)), 4, 0), 4, 1)
    mask[5:9, 10:20] = 255
    for width in (1, 3, 4):
        out = T.EdgeExtractor(edge_width=width)(_sample(_rgb(rng, 24, 32), mask))["edge"]
        expect = ref.EdgeExtractor(edge_width=width)(_ref_meta(_rgb(rng, 24, 32), mask))["edge_target"]
        assert np.array_equal(out.numpy(), expect.astype(np.int64))


def test_photometric_steps_parity():
    rng = np.random.default_rng(0)
    img = _rgb(rng, 8, 64)
    bgr = np.ascontiguousarray(img[..., ::-1])
    pmd, rpmd = T.PhotoMetricDistortion(), ref.PhotoMetricDistortion()
    ours = torch.from_numpy(img).permute(2, 0, 1).contiguous()

    def as_bgr(t):
        return t.permute(1, 2, 0).flip(-1).numpy()

    for alpha in (0.5, 0.77, 1.4):
        assert np.array_equal(as_bgr(T._convert(ours, alpha=alpha)), rpmd.convert(bgr, alpha=alpha))
        expect = rpmd.rgb2hsv(bgr.copy())
        expect[..., 1] = rpmd.convert(expect[..., 1], alpha=alpha)
        assert np.array_equal(as_bgr(pmd.saturation(ours, alpha)), rpmd.hsv2rgb(expect))
    for delta in (-18, -3, 0, 5, 17):
        expect = rpmd.rgb2hsv(bgr.copy())
        expect[..., 0] = (expect[..., 0].astype(int) + delta) % 180
        assert np.array_equal(as_bgr(pmd.hue(ours, delta)), rpmd.hsv2rgb(expect))


# ---------------------------------------------------------------------------------------------
# random transforms: the reference fed segzoo's draws
# ---------------------------------------------------------------------------------------------
class _Script:
    """Records segzoo's draws; replays them to the reference's numpy.random calls in order."""

    def __init__(self, monkeypatch):
        self.draws = []
        uniform, randint = T._uniform, T._randint

        def rec_uniform(generator, low=0.0, high=1.0):
            state = None if generator is None else generator.get_state()
            value = uniform(generator, low, high)
            if state is not None:
                g = torch.Generator()
                g.set_state(state)
                raw = torch.rand((), generator=g, dtype=torch.float64).item()
            else:
                raw = None
            self.draws.append(("u", raw, value))
            return value

        def rec_randint(generator, low, high):
            value = randint(generator, low, high)
            self.draws.append(("i", value, value))
            return value

        monkeypatch.setattr(T, "_uniform", rec_uniform)
        monkeypatch.setattr(T, "_randint", rec_randint)
        self.monkeypatch = monkeypatch

    def replay(self):
        queue = list(self.draws)

        def pop(kind):
            assert queue, "the reference draws more numbers than segzoo"
            k, raw, value = queue.pop(0)
            assert k == kind, f"draw order differs: reference wants {kind}, segzoo drew {k}"
            return raw, value

        mp = self.monkeypatch
        mp.setattr(np.random, "random_sample", lambda: pop("u")[0])
        mp.setattr(np.random, "rand", lambda: pop("u")[0])
        mp.setattr(np.random, "uniform", lambda low=0.0, high=1.0: pop("u")[1])
        mp.setattr(np.random, "randint", lambda low, high=None: pop("i")[1])
        return queue


TRAIN_PIPELINE = [
    ["Resize", {"output_size": [192, 96], "keep_ratio": True, "scale_range": [0.7, 2.0]}],
    ["RandomCrop", {"crop_size": [32, 64], "one_category_max_ratio": 0.75}],
    ["RandomFlip", {"prob": 0.5}],
    ["PhotoMetricDistortion", {}],
    ["Normalize", {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}],
    ["ToTensor", {}],
    ["Padding", {"data_type": "tensor", "output_size": [32, 64]}],
]


@pytest.mark.parametrize("seed", range(6))
def test_train_pipeline_parity_with_same_draws(monkeypatch, seed):
    """The zoo's training recipe (smaller sizes): segzoo and the reference give the same tensors.

    The crop is always 32x64: a width that is a multiple of 32 keeps OpenCV's HSV->RGB on its vector path
    (its scalar path for the last ``W mod 32`` pixels of a row rounds where the vector path truncates)."""
    rng = np.random.default_rng(seed)
    img = _rgb(rng, 48, 96)
    mask = np.repeat(np.repeat(rng.integers(0, 4, (6, 12)), 8, 0), 8, 1)
    mask[:4, :10] = 255
    script = _Script(monkeypatch)
    out = T.build_pipeline(TRAIN_PIPELINE)({"image": img, "mask": mask}, generator=torch.Generator().manual_seed(seed))
    queue = script.replay()
    meta = _ref_meta(img, mask)
    for name, kwargs in TRAIN_PIPELINE:
        meta = getattr(ref, name)(**kwargs)(meta)
    assert not queue, "segzoo drew more numbers than the reference"
    seg = meta["seg_target"].clone()
    seg[seg == -100] = 255
    assert torch.equal(out["mask"], seg.long())
    assert torch.equal(out["image"], meta["image"])


def test_train_pipeline_from_zoo_recipe_builds_and_runs():
    import segzoo
    built = 0
    for name in segzoo.list_models()[:40]:
        recipe = segzoo.model_info(name).get("recipe") or {}
        steps = recipe.get("train_pipeline")
        if isinstance(steps, list):
            pipe = T.build_pipeline(steps)
            built += 1
    assert built
    rng = np.random.default_rng(0)
    out = pipe({"image": _rgb(rng, 40, 60), "mask": rng.integers(0, 3, (40, 60))}, generator=torch.Generator())
    crop = tuple(recipe["crop_size"])
    assert out["image"].shape[1:] in (crop, crop[::-1]) and out["image"].dtype == torch.float32
    assert out["mask"].shape == out["image"].shape[1:] and out["mask"].dtype == torch.int64


def test_build_pipeline_errors():
    with pytest.raises(ValueError, match="list of"):
        T.build_pipeline("Resize then crop")
    with pytest.raises(ValueError, match="unknown transform 'Blur'"):
        T.build_pipeline([["Blur", {}]])
    with pytest.raises(ValueError, match=r"step 0 \(Resize\)"):
        T.build_pipeline([["Resize", {"size": 3}]])
    pipe = T.build_pipeline([{"type": "RandomFlip", "prob": 1.0}, ["ToTensor", {}]])
    img, mask = np.zeros((4, 6, 3), np.uint8), np.arange(24).reshape(4, 6) % 3
    image, m = pipe(img, mask)
    assert image.shape == (3, 4, 6) and torch.equal(m, torch.from_numpy(mask[:, ::-1].copy()))


def test_recipe_ignore_minus_100_reads_as_255():
    assert T.RandomCrop(8, ignore_index=-100).ignore_index == 255
    assert T.Padding(8, seg_target_fill_value=-100).seg_target_fill_value == 255


# ---------------------------------------------------------------------------------------------
# random transforms: distributions
# ---------------------------------------------------------------------------------------------
def test_random_crop_respects_category_cap():
    mask = np.zeros((20, 100), dtype=np.int64)
    mask[:, 50:] = 1
    img = np.zeros((20, 100, 3), np.uint8)
    g = torch.Generator().manual_seed(0)

    def ratio(out):
        _, counts = torch.unique(out["mask"], return_counts=True)
        return counts.max().item() / counts.sum().item()

    capped = [ratio(T.RandomCrop((20, 20))(_sample(img, mask), g)) < 0.75 for _ in range(300)]
    single = [ratio(T.RandomCrop((20, 20), max_tries=1)(_sample(img, mask), g)) < 0.75 for _ in range(300)]
    # one window in ~7.4 satisfies the cap: 10 tries find one ~78% of the time
    assert 0.65 < np.mean(capped) < 0.9 and np.mean(single) < 0.25
    ignored = np.full((20, 100), 255)
    out = T.RandomCrop((10, 10))(_sample(img, ignored), g)
    assert out["mask"].shape == (20, 100)  # nothing labelled: uncropped, as the reference


def test_random_crop_reproducible_and_smaller_images():
    rng = np.random.default_rng(0)
    img, mask = _rgb(rng, 30, 40), rng.integers(0, 4, (30, 40))
    a = T.RandomCrop((16, 16))(_sample(img, mask), torch.Generator().manual_seed(5))
    b = T.RandomCrop((16, 16))(_sample(img, mask), torch.Generator().manual_seed(5))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    small = T.RandomCrop((64, 64))(_sample(img, mask), torch.Generator())
    assert small["image"].shape == (3, 30, 40)


def test_random_flip_flips_image_and_mask_together():
    rng = np.random.default_rng(0)
    img, mask = _rgb(rng, 5, 7), rng.integers(0, 4, (5, 7))
    g = torch.Generator().manual_seed(1)
    flips = 0
    for _ in range(400):
        out = T.RandomFlip(0.5)(_sample(img, mask), g)
        flipped = not torch.equal(out["mask"], torch.from_numpy(mask))
        assert torch.equal(out["image"], torch.from_numpy(img).permute(2, 0, 1).flip(-1) if flipped
                           else torch.from_numpy(img).permute(2, 0, 1))
        flips += flipped
    assert 160 < flips < 240


def test_random_resize_scale_range():
    g = torch.Generator().manual_seed(0)
    resize = T.Resize((200, 100), scale_range=(0.5, 2.0))
    widths = [resize.target_size(50, 100, g)[1] for _ in range(500)]
    assert min(widths) >= 100 and max(widths) <= 400 and len(set(widths)) > 100
    assert 0.4 < np.mean(np.array(widths) < 250) < 0.6  # scale uniform on [0.5, 2]: 1.25 is the median
    img, mask = np.zeros((5, 10, 3), np.uint8), np.zeros((5, 10), np.int64)
    out = resize(_sample(img, mask), torch.Generator().manual_seed(1))
    assert out["image"].shape[1:] == out["mask"].shape == resize.target_size(5, 10, torch.Generator().manual_seed(1))


def test_random_choice_resize_and_rotation():
    rng = np.random.default_rng(0)
    img, mask = _rgb(rng, 20, 30), rng.integers(0, 4, (20, 30))
    g = torch.Generator().manual_seed(0)
    sizes = {T.RandomChoiceResize([(40, 60), (10, 15)], scale_range=None)(_sample(img, mask), g)["image"].shape[-1]
             for _ in range(30)}
    assert sizes == {60, 15}
    same = T.RandomRotation(prob=1.0).rotate(_sample(img, mask), 0)
    assert torch.equal(same["image"], torch.from_numpy(img).permute(2, 0, 1))
    assert torch.equal(same["mask"], torch.from_numpy(mask))
    turned = T.RandomRotation(prob=1.0).rotate(_sample(img, mask), 30)
    assert set(turned["mask"].unique().tolist()) <= {0, 1, 2, 3, 255} and turned["mask"][0, 0] == 255


def test_photometric_distortion_keeps_mask_and_is_seeded():
    rng = np.random.default_rng(0)
    img, mask = _rgb(rng, 16, 32), rng.integers(0, 4, (16, 32))
    outs = [T.PhotoMetricDistortion()(_sample(img, mask), torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
    assert torch.equal(outs[0]["image"], outs[1]["image"]) and not torch.equal(outs[0]["image"], outs[2]["image"])
    assert all(torch.equal(o["mask"], torch.from_numpy(mask)) and o["image"].dtype == torch.uint8 for o in outs)
