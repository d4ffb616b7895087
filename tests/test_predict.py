"""segzoo.inference: whole / slide / multi-scale + flip against SSSegmentation 1.7.0's own
``inference`` / ``auginference`` + ``test.py`` averaging, input handling, and ``segzoo predict``.

One reference FCN (ResNet-50, output stride 16, VOC) with random weights and BatchNorm statistics,
loaded strictly through ``create_model(checkpoint=...)``; images are 60..120 px, non-square.
"""
import copy
import dataclasses
import traceback

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import segzoo
from segzoo.cli import main as cli_main
from segzoo.inference import (InvalidImageError, predict, resized_shape, slide_inference, whole_inference,
                              window_grid)
from _ssseg import rel_diff

CONFIG, NAME = "fcn_resnet50os16_voc", "fcn_resnet50_os16_voc"
# a shallow variant of the record keeps the tests fast: ResNet-18 backbone, 32-channel heads
TINY = {"backbone": {"depth": 18}, "decode_head": {"channels": 32},
        "aux_heads": [{"type": "fcn", "in_index": 2, "channels": 32, "num_convs": 1, "dropout": 0.1}]}
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny inputs: one intra-op thread is as fast and far steadier on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_ssseg():
    from ssseg.modules.models.segmentors.builder import BuildSegmentor
    from _ssseg import randomize_, ssseg_config
    cfg = ssseg_config(CONFIG, depth=18, structure_type="resnet18conv3x3stem")
    cfg["head"].update(in_channels=512, feats_channels=32)
    cfg["auxiliary"].update(in_channels=256, out_channels=32)
    cfg["dataset"] = {"train": {"data_pipelines": []}}  # read by auginference when flipping
    torch.manual_seed(0)
    ref = BuildSegmentor(segmentor_cfg=cfg, mode="TEST")
    randomize_(ref, 0)
    return ref.eval()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(reference ssseg segmentor, its checkpoint path, segzoo model with the same weights)."""
    ref = _tiny_ssseg()
    path = tmp_path_factory.mktemp("ckpt") / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    model = segzoo.create_model(NAME, checkpoint=path, **TINY)
    return ref, path, model


@pytest.fixture
def model(pair):
    """The segzoo model with its original record restored after each test."""
    m = pair[2]
    record = m.record
    yield m
    m.record = record
    m.eval()


def _with_inference(model, **inference):
    model.record = dataclasses.replace(model.record, inference={**model.record.inference, **inference})
    return model


def _image(h=75, w=110, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _normalise(img: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    return (x - MEAN) * (1.0 / STD)


# ---- protocol arithmetic --------------------------------------------------------------------------
def test_resized_shape_matches_ssseg_resize():
    from ssseg.modules.datasets.pipelines.transforms import Resize
    for size in ([2048, 512], [2048, 1024], [520, 520], [512, 2048], [20, 12]):
        for keep in (True, False):
            t = Resize(output_size=size, keep_ratio=keep, scale_range=None)
            for h, w in [(375, 500), (500, 333), (1024, 2048), (37, 61), (512, 512), (331, 17), (40, 20), (20, 40)]:
                out = t({"image": np.zeros((h, w, 3), np.uint8)})["image"].shape[:2]
                assert resized_shape(h, w, size, keep) == out, (size, keep, h, w)
    assert resized_shape(40, 20, [20, 12]) == (20, 10) and resized_shape(10, 5, [5, 3]) == (5, 3)  # half up
    assert resized_shape(331, 17, [5, 3]) == (5, 1)  # never empty (where cv2 would fail)


def test_test_time_resize_matches_cv2(model):
    """The record's resize, done in torch, matches ssseg's cv2 bilinear up to uint8 rounding."""
    import cv2
    from segzoo.inference import _prepare, resolve_config
    img = _image(61, 83)
    for size, expected in (([160, 120], (118, 160)), ([60, 40], (40, 54))):  # up and down
        _with_inference(model, resize={"size": size, "keep_ratio": True})
        x = _prepare(img, resolve_config(model), torch.device("cpu"))
        assert x.shape[2:] == resized_shape(61, 83, size) == expected
        theirs = _normalise(cv2.resize(img, expected[::-1], interpolation=cv2.INTER_LINEAR))
        assert float((x - theirs).abs().max() * STD.max()) <= 1.01  # at most one grey level apart


def test_window_grid_covers_and_clips():
    rows, cols = window_grid(75, 110, (48, 64), (20, 30))
    assert rows == [(0, 48), (20, 68), (27, 75)]
    assert cols == [(0, 64), (30, 94), (46, 110)]
    assert window_grid(40, 50, (48, 64), (20, 30)) == ([(0, 40)], [(0, 50)])  # smaller than one window


# ---- whole / slide --------------------------------------------------------------------------------
def test_slide_with_one_window_equals_whole(model):
    img = _image()
    _with_inference(model, probs_before_resize=False)
    whole = predict(model, img, mode="whole", resize=False, output="logits")
    slide = predict(model, img, mode="slide", crop_size=(96, 128), stride=(64, 64), resize=False, output="logits")
    assert whole.shape == slide.shape == (21, 75, 110)
    assert rel_diff(torch.from_numpy(slide), torch.from_numpy(whole)) <= 1e-6
    assert (predict(model, img, mode="whole", resize=False) ==
            predict(model, img, mode="slide", crop_size=128, stride=64, resize=False)).all()


def test_slide_overlap_average_matches_direct_computation(model):
    img = _image(75, 110, seed=1)
    x = _normalise(img)
    crop, stride = (48, 64), (20, 30)
    total = torch.zeros(1, 21, 75, 110, dtype=torch.float64)
    count = torch.zeros(1, 1, 75, 110, dtype=torch.float64)
    with torch.no_grad():
        for y1 in (0, 20, 27):          # rows and columns of the grid, written out
            for x1 in (0, 30, 46):
                win = x[:, :, y1:y1 + 48, x1:x1 + 64]
                logits = F.interpolate(model(win), size=(48, 64), mode="bilinear", align_corners=False)
                total[:, :, y1:y1 + 48, x1:x1 + 64] += logits.double()
                count[:, :, y1:y1 + 48, x1:x1 + 64] += 1
    direct = (total / count).float()
    assert int(count.min()) == 1 and int(count.max()) == 9
    ours = slide_inference(model, x, crop, stride, batch_size=4)
    assert rel_diff(ours, direct) <= 1e-5
    via_predict = predict(model, img, mode="slide", crop_size=crop, stride=stride, resize=False, output="logits")
    assert rel_diff(torch.from_numpy(via_predict)[None], direct) <= 1e-5


def test_batch_size_does_not_change_the_result(model):
    img = _image(70, 101, seed=2)
    kw = dict(mode="slide", crop_size=(40, 48), stride=(24, 30), resize=False, output="logits")
    one = predict(model, img, batch_size=1, **kw)
    three = predict(model, img, batch_size=3, **kw)
    assert rel_diff(torch.from_numpy(three), torch.from_numpy(one)) <= 1e-5
    cpu_scores = predict(model, img, batch_size=3, score_device="cpu", **kw)
    assert np.array_equal(cpu_scores, three)


def test_frozen_fast_path_matches_eager_and_follows_weight_changes(model):
    """optimize=True runs the windows through a traced, frozen, BN-folded copy: same scores to
    float rounding; the copy is rebuilt when the weights change."""
    from segzoo.inference import frozen_forward
    x = _normalise(_image(70, 101, seed=4))
    kw = dict(crop_size=(40, 48), stride=(24, 30), batch_size=1)
    eager = slide_inference(model, x, optimize=False, **kw)
    fast = slide_inference(model, x, optimize=True, **kw)
    assert rel_diff(fast, eager) <= 1e-5
    net = frozen_forward(model, x[:, :, :40, :48])
    assert net.state == "fast" and isinstance(net.fast, torch.jit.ScriptModule)  # verified on its first window
    assert frozen_forward(model, x[:, :, :40, :48]) is net  # cached per shape
    auto = predict(model, _image(70, 101, seed=4), mode="slide", resize=False, output="logits", **kw)
    assert rel_diff(torch.from_numpy(auto)[None], eager) <= 1e-5
    w = model.decode_head.classifier.bias
    before = w.detach().clone()
    with torch.no_grad():
        w.add_(1.0)
    try:
        assert frozen_forward(model, x[:, :, :40, :48]) is not net
        moved = slide_inference(model, x, optimize=True, **kw)
        assert rel_diff(moved, eager + 1.0) <= 1e-5
    finally:
        with torch.no_grad():
            w.copy_(before)


@pytest.mark.parametrize("align_corners", [False, True])
def test_window_upsampling_is_f_interpolate(align_corners):
    from segzoo.inference import _upsample_into
    logits = torch.randn(3, 5, 6, 9)
    out = torch.full((3, 5, 40, 57), float("nan"))
    got = _upsample_into(logits, out, align_corners)
    assert got.data_ptr() == out.data_ptr()
    assert torch.equal(got, F.interpolate(logits, size=(40, 57), mode="bilinear", align_corners=align_corners))


def test_default_batch_size():
    from segzoo.inference import default_batch_size
    assert default_batch_size("cpu") == 1 and default_batch_size("cuda:0") == 4


def test_runs_in_eval_mode_and_restores_training_flag(model):
    img = _image(64, 80, seed=3)
    expected = predict(model, img, resize=False, output="logits")
    model.train()
    got = predict(model, img, resize=False, output="logits")
    assert model.training
    assert np.array_equal(got, expected)


def test_whole_inference_returns_head_resolution(model):
    x = _normalise(_image(64, 96))
    with torch.inference_mode():
        out = whole_inference(model, x)
    assert out.shape == (1, 21, 4, 6)


# ---- equivalence with ssseg's own inference -------------------------------------------------------
PROTOCOLS = {  # name -> (ssseg inference cfg, our predict kwargs)
    "whole": ({"forward": {"mode": "whole", "cropsize": None, "stride": None},
               "tta": {"multiscale": [1], "flip": False, "use_probs_before_resize": False}}, {}),
    "whole_probs_flip_multiscale": ({"forward": {"mode": "whole", "cropsize": None, "stride": None},
                                     "tta": {"multiscale": [0.75, 1.0, 1.25], "flip": True,
                                             "use_probs_before_resize": True}}, {}),
    "slide": ({"forward": {"mode": "slide", "cropsize": [48, 64], "stride": [20, 30]},
               "tta": {"multiscale": [1], "flip": False, "use_probs_before_resize": False}}, {"batch_size": 4}),
    "slide_probs": ({"forward": {"mode": "slide", "cropsize": [48, 64], "stride": [32, 32]},
                     "tta": {"multiscale": [1], "flip": False, "use_probs_before_resize": True}}, {"batch_size": 2}),
    "slide_flip_multiscale": ({"forward": {"mode": "slide", "cropsize": [48, 64], "stride": [32, 40]},
                               "tta": {"multiscale": [0.75, 1.0], "flip": True, "use_probs_before_resize": False}},
                              {"batch_size": 3}),
    "whole_resized": ({"forward": {"mode": "whole", "cropsize": None, "stride": None},
                       "tta": {"multiscale": [1], "flip": False, "use_probs_before_resize": False}},
                      {"resize": {"size": [150, 100], "keep_ratio": True}}),
    "slide_resized_probs": ({"forward": {"mode": "slide", "cropsize": [64, 64], "stride": [42, 42]},
                             "tta": {"multiscale": [1], "flip": True, "use_probs_before_resize": True}},
                            {"resize": {"size": [150, 100], "keep_ratio": True}}),
}


def _ssseg_scores(ref, x, size):
    """SSSegmentation's test.py: auginference, each entry resized to the image size, averaged."""
    with torch.no_grad():
        outs = ref.auginference(x)
        outs = [F.interpolate(o, size=size, mode="bilinear", align_corners=ref.align_corners) for o in outs]
        return sum(outs) / len(outs)


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_matches_ssseg_inference(pair, model, protocol):
    """Our predict (settings from the record) against ssseg's auginference + test.py on the same
    normalised input: the test-time resized image where the record resizes (the resize itself is
    checked against cv2 above)."""
    from segzoo.inference import _prepare, resolve_config
    ref, _, _ = pair
    inference, kwargs = PROTOCOLS[protocol]
    kwargs = dict(kwargs)
    ref.cfg["inference"] = copy.deepcopy(inference)
    fwd, tta = inference["forward"], inference["tta"]
    _with_inference(model, mode=fwd["mode"], crop_size=fwd["cropsize"], stride=fwd["stride"],
                    scales=tta["multiscale"], flip=tta["flip"], probs_before_resize=tta["use_probs_before_resize"],
                    resize=kwargs.pop("resize", None))
    img = _image(77, 109, seed=4)
    x = _prepare(img, resolve_config(model), torch.device("cpu"))
    assert (x.shape[2:] == (100, 142)) == ("resized" in protocol)
    theirs = _ssseg_scores(ref, x, img.shape[:2])[0]
    output = "probs" if tta["use_probs_before_resize"] else "logits"
    ours = torch.from_numpy(predict(model, img, output=output, **kwargs))
    assert ours.shape == theirs.shape == (21, 77, 109)
    if output == "logits":
        assert rel_diff(ours, theirs) <= 1e-5
    else:  # logits of random weights reach ~1e3: softmax turns their float rounding into ~1e-4
        assert float((ours - theirs).abs().max()) <= 1e-3
    labels = predict(model, img, **kwargs)
    agree = (torch.from_numpy(labels) == theirs.argmax(0)).float().mean()
    assert agree >= 0.999


# ---- inputs ---------------------------------------------------------------------------------------
def test_every_input_type_gives_the_same_result(model, tmp_path):
    img = _image(66, 90, seed=5)
    path = tmp_path / "img.png"
    Image.fromarray(img).save(path)
    expected = predict(model, img, resize=False)
    assert expected.shape == (66, 90) and expected.dtype == np.int64
    for inp in (str(path), path, Image.open(path), img.astype(np.float32)):
        assert np.array_equal(predict(model, inp, resize=False), expected)
    out = predict(model, [str(path), img, Image.fromarray(img)], resize=False)
    assert isinstance(out, list) and len(out) == 3
    assert all(np.array_equal(o, expected) for o in out)
    assert predict(model, [], resize=False) == []
    probs = predict(model, img, resize=False, output="probs")
    assert probs.shape == (21, 66, 90) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert np.array_equal(probs.argmax(0), expected)


def test_grayscale_and_rgba_become_rgb(model):
    gray = np.random.default_rng(6).integers(0, 256, (64, 84), dtype=np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    expected = predict(model, rgb, resize=False, output="logits")
    for inp in (gray, gray[:, :, None], Image.fromarray(gray)):
        assert np.array_equal(predict(model, inp, resize=False, output="logits"), expected)
    color = _image(64, 84, seed=7)
    rgba = np.concatenate([color, np.full((64, 84, 1), 17, np.uint8)], axis=2)
    expected = predict(model, color, resize=False, output="logits")
    for inp in (rgba, Image.fromarray(rgba, mode="RGBA")):
        assert np.array_equal(predict(model, inp, resize=False, output="logits"), expected)


def _bad_inputs(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    nan = _image(8, 8).astype(np.float32)
    nan[1, 1, 1] = np.nan
    return {
        "missing file": (str(tmp_path / "missing.png"), "no such file"),
        "not an image": (text, "cannot read"),
        "two channels": (np.zeros((8, 8, 2), np.uint8), "1, 3 or 4 channels"),
        "channel first": (np.zeros((3, 8, 8), np.uint8), "channel-first"),
        "empty": (np.zeros((0, 8, 3), np.uint8), "empty"),
        "non-finite": (nan, "NaN or infinite"),
        "int32": (np.zeros((8, 8, 3), np.int32), "unsupported dtype int32"),
        "bool": (np.zeros((8, 8, 3), bool), "unsupported dtype bool"),
        "4-d": (np.zeros((1, 8, 8, 3), np.uint8), "4 dimensions"),
        "1-d": (np.zeros(8, np.uint8), "1 dimensions"),
        "int": (3, "unsupported type int"),
        "dict": ({"image": 1}, "unsupported type dict"),
        "tensor": (torch.zeros(1, 3, 8, 8), "torch.Tensor"),
        "16-bit PIL": (Image.fromarray(np.zeros((8, 8), np.uint16)), "unsupported PIL mode"),
        "bad list item": ([_image(8, 8), None], "image 1: unsupported type NoneType"),
    }


def test_bad_inputs_raise_one_clear_error(model, tmp_path):
    for label, (inp, message) in _bad_inputs(tmp_path).items():
        with pytest.raises(InvalidImageError) as info:
            predict(model, inp, resize=False)
        exc = info.value
        assert isinstance(exc, ValueError)
        assert message in str(exc), (label, str(exc))
        assert "\n" not in str(exc), label
        last = traceback.extract_tb(exc.__traceback__)[-1]
        assert last.filename.endswith("segzoo/inference.py"), (label, last.filename)
        assert exc.__cause__ is None and exc.__suppress_context__ or exc.__context__ is None, label


def test_bad_arguments_raise_value_errors(model):
    img = _image(16, 16)
    for kwargs, message in [({"mode": "tiles"}, "mode must be"), ({"output": "mask"}, "output must be"),
                            ({"batch_size": 0}, "batch_size"), ({"mode": "slide", "crop_size": (0, 8)}, "crop_size"),
                            ({"scales": [1.0, -0.5]}, "scales"), ({"resize": "big"}, "resize")]:
        with pytest.raises(ValueError, match=message):
            predict(model, img, **kwargs)
    _with_inference(model, crop_size=None)
    model.record = dataclasses.replace(model.record, crop_size=None)
    with pytest.raises(ValueError, match="slide mode needs crop_size"):
        predict(model, img, mode="slide")


def test_record_defaults_are_used(model):
    """The record's resize, mode, crop and stride apply when the call leaves them unset."""
    img = _image(61, 83, seed=8)
    _with_inference(model, mode="slide", crop_size=[48, 64], stride=[32, 40], scales=[1.0], flip=False,
                    probs_before_resize=False, resize={"size": [160, 120], "keep_ratio": True})
    by_record = predict(model, img, output="logits")
    explicit = predict(model, img, mode="slide", crop_size=(48, 64), stride=(32, 40),
                       resize={"size": [160, 120], "keep_ratio": True}, output="logits")
    assert by_record.shape == (21, 61, 83)
    assert np.array_equal(by_record, explicit)
    assert not np.allclose(by_record, predict(model, img, output="logits", resize=False))


def test_flip_only_mirrors_back():
    """Flip TTA mirrors the scores back and nothing else: no record swaps classes in mirrored
    predictions (SSSegmentation's configs have no such pairs), so the protocol has no field for it."""
    from segzoo.inference import InferenceConfig
    assert "flip_pairs" not in {f.name for f in dataclasses.fields(InferenceConfig)}
    assert all("flip_pairs" not in (segzoo.model_info(n)["inference"] or {}) for n in segzoo.list_models())


# ---- command line ---------------------------------------------------------------------------------
def _tiny_create_model(monkeypatch):
    real = segzoo.create_model
    monkeypatch.setattr(segzoo, "create_model", lambda name, **kw: real(name, **kw, **TINY))


def test_cli_predict_writes_label_and_overlay_pngs(pair, model, tmp_path, capsys, monkeypatch):
    _, ckpt, _ = pair
    _tiny_create_model(monkeypatch)
    images = []
    for i, (h, w) in enumerate([(60, 90), (72, 64)]):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(_image(h, w, seed=10 + i)).save(p)
        images.append(p)
    out = tmp_path / "out"
    rc = cli_main(["predict", *map(str, images), "--model", NAME, "--checkpoint", str(ckpt), "--out", str(out),
                   "--mode", "slide", "--batch-size", "2"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("img" in line for line in lines)
    for p in images:
        labels = np.asarray(Image.open(out / f"{p.stem}_labels.png"))
        overlay = np.asarray(Image.open(out / f"{p.stem}_overlay.png"))
        rgb = np.asarray(Image.open(p))
        assert labels.dtype == np.uint8 and labels.shape == rgb.shape[:2]
        assert overlay.shape == rgb.shape and overlay.dtype == np.uint8
        # model.record is the registered VOC record here: its resize (to 512 on the short side) applies
        expected = predict(model, rgb, mode="slide", batch_size=2)
        assert np.array_equal(labels, expected)
        palette = np.asarray(segzoo.zoo.dataset_meta("voc")["palette"], np.float32)
        blend = np.clip(0.5 * rgb + 0.5 * palette[expected] + 0.5, 0, 255).astype(np.uint8)
        assert np.abs(overlay.astype(int) - blend).max() <= 1


def test_cli_predict_reports_a_bad_image(pair, tmp_path, capsys):
    _, ckpt, _ = pair
    rc = cli_main(["predict", str(tmp_path / "nope.jpg"), "--model", NAME, "--checkpoint", str(ckpt),
                   "--out", str(tmp_path / "out")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "nope.jpg" in err and "no such file" in err


# ---- the fast path never breaks predict -----------------------------------------------------------
def _fresh_fast_path(model):
    model.__dict__.pop("_segzoo_frozen", None)


@pytest.mark.parametrize("failure", ["trace", "run", "wrong"])
def test_fast_path_falls_back_to_eager(model, monkeypatch, caplog, failure):
    """A candidate that fails to build, fails at run time (as TorchScript's oneDNN adaptive pooling
    did on PSPNet) or gives other logits is dropped with one debug line; the eager network serves."""
    import logging

    from segzoo import inference
    x = _normalise(_image(70, 101, seed=4))
    kw = dict(crop_size=(40, 48), stride=(24, 30), batch_size=1)
    eager = slide_inference(model, x, optimize=False, **kw)

    def broken(self, crops):
        if failure == "trace":
            raise RuntimeError("cannot trace this")

        def fn(t):
            if failure == "run":
                raise RuntimeError("The following operation failed in the TorchScript interpreter")
            return self.model(t) + 0.5
        return fn
    monkeypatch.setattr(inference._FastForward, "_build", broken)
    _fresh_fast_path(model)
    caplog.set_level(logging.DEBUG, logger="segzoo")
    fast = slide_inference(model, x, optimize=True, **kw)
    assert torch.equal(fast, eager)
    net = inference.frozen_forward(model, x[:, :, :40, :48])
    assert net.state == "eager"
    lines = [r for r in caplog.records if "fast inference path" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    _fresh_fast_path(model)


def test_fast_path_gives_up_when_the_kept_candidate_fails_later(model, monkeypatch):
    from segzoo import inference
    x = _normalise(_image(70, 101, seed=4))
    kw = dict(crop_size=(40, 48), stride=(24, 30), batch_size=1)
    eager = slide_inference(model, x, optimize=False, **kw)
    calls = []

    def flaky(self, crops):
        def fn(t):
            calls.append(1)
            if len(calls) > 1:
                raise RuntimeError("input size is not divisible by the output size")
            return self.model(t)
        return fn
    monkeypatch.setattr(inference._FastForward, "_build", flaky)
    _fresh_fast_path(model)
    assert torch.equal(slide_inference(model, x, optimize=True, **kw), eager)
    assert inference.frozen_forward(model, x[:, :, :40, :48]).state == "eager"
    _fresh_fast_path(model)


# ---- the method's signature and float images ------------------------------------------------------
def test_model_predict_shows_its_signature_and_docstring(model):
    import inspect
    sig = inspect.signature(model.predict)
    ref = inspect.signature(predict)
    assert list(sig.parameters) == list(ref.parameters)[1:]  # all but predict's ``model``
    for name, param in sig.parameters.items():
        assert param.default == ref.parameters[name].default and param.kind == ref.parameters[name].kind, name
    assert {"mode", "crop_size", "stride", "scales", "flip", "output"} <= set(sig.parameters)
    assert "slide" in model.predict.__doc__ and "crop_size" in model.predict.__doc__


def test_float_images_are_0_to_255_and_0_to_1_warns(model):
    img = _image(40, 52, seed=3)
    as_float = img.astype(np.float32)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(predict(model, as_float), predict(model, img))
    with pytest.warns(UserWarning, match="within 0..1.*multiply by 255"):
        predict(model, as_float / 255.0)


def test_errors_are_exported_from_segzoo():
    from segzoo import errors
    for name in ("InvalidImageError", "WeightsUnavailableError", "ChecksumMismatchError", "CheckpointMismatchError",
                 "UnknownModelError"):
        assert getattr(segzoo, name) is getattr(errors, name)
    assert segzoo.InvalidImageError is InvalidImageError


# ---- segzoo predict: folders, bad files, output options --------------------------------------------
def test_cli_predict_folder_with_a_bad_file(pair, model, tmp_path, capsys, monkeypatch):
    """Every readable image of the folder (sorted) is processed; the bad one is named on stderr and
    the exit status is 1 at the end; --crop-size / --stride / --output probs reach predict."""
    _, ckpt, _ = pair
    _tiny_create_model(monkeypatch)
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(_image(50, 70, seed=1)).save(folder / "b.png")
    (folder / "a_broken.jpg").write_bytes(b"not a jpeg at all")
    Image.fromarray(_image(64, 48, seed=2)).save(folder / "c.jpg", quality=95)
    (folder / "notes.txt").write_text("not an image, not looked at")
    out = tmp_path / "out"
    rc = cli_main(["predict", str(folder), "--model", NAME, "--checkpoint", str(ckpt), "--out", str(out),
                   "--mode", "slide", "--crop-size", "256", "320", "--stride", "200", "--output", "probs"])
    cap = capsys.readouterr()
    assert rc == 1
    assert "a_broken.jpg" in cap.err and "cannot read" in cap.err and "1 of 3 inputs failed" in cap.err
    assert "notes.txt" not in cap.err
    done = cap.out.strip().splitlines()
    assert [line.split(":")[0] for line in done] == [str(folder / "b.png"), str(folder / "c.jpg")]
    assert sorted(p.name for p in out.iterdir()) == ["b_overlay.png", "b_probs.npy", "c_overlay.png", "c_probs.npy"]
    probs = np.load(out / "b_probs.npy")
    rgb = np.asarray(Image.open(folder / "b.png"))
    expected = predict(model, rgb, mode="slide", crop_size=(256, 320), stride=200, output="probs")
    assert probs.shape == expected.shape and np.allclose(probs, expected, atol=1e-5)


def test_cli_predict_creates_out_only_when_writing(pair, tmp_path, capsys, monkeypatch):
    _, ckpt, _ = pair
    _tiny_create_model(monkeypatch)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    rc = cli_main(["predict", str(bad), str(empty), "--model", NAME, "--checkpoint", str(ckpt), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and not out.exists()
    assert "bad.png" in err and f"{empty}: no image files in this folder" in err
