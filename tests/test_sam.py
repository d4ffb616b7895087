"""Segment Anything / MobileSAM: segzoo's network and promptable inference give the references'
masks, IoU scores and low-resolution logits on random weights, with shrunk encoders (fewer and
narrower blocks; ViT encoders at a 256 input, whose 16x16 grid still pads the 14-wide windows;
MobileSAM at 1024, which its reference hard-codes). References: segment_anything's SamPredictor,
mobile_sam's SamPredictor, transformers' SamModel (fed the same pixel tensor: its image processor
is not Meta's PIL resize) and SSSegmentation 1.7.0's SAMPredictor / MobileSAMPredictor. The
automatic mask generator is compared with segment_anything's SamAutomaticMaskGenerator.

mobile_sam re-registers timm's ``tiny_vit_*`` models on import: it is imported inside a fixture that
puts timm's registry back afterwards.
"""
from __future__ import annotations

import copy
import warnings
from functools import partial

import numpy as np
import pytest
import torch

from segzoo.models.sam import Sam, convert_state_dict, detect_format, sam_arch
from segzoo.sam import make_promptable
from segzoo.sam.automatic import AutomaticMaskGenerator, mask_to_rle, rle_area, rle_to_coco_string, rle_to_mask

VIT = {"img_size": 256, "embed_dim": 64, "depth": 2, "num_heads": 2, "global_attn_indexes": [1], "window_size": 14}
# MobileSAM's reference keeps the resolution in the patch merging into 320, 448 or 576 channels only
TINY = {"embed_dims": [16, 32, 48, 320], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 3, 10]}
POINT = dict(points=np.array([[70.0, 50.0]]), point_labels=np.array([1]))
BOX = dict(boxes=np.array([30.0, 20.0, 150.0, 110.0]))
PROMPTS = {"point": POINT, "box": BOX, "point+box": dict(points=np.array([[70.0, 50.0], [20.0, 90.0]]),
                                                         point_labels=np.array([1, 0]), **BOX)}


def _image(h=120, w=170, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@torch.no_grad()
def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Noise into every tensor left constant by the default init (position embeddings, biases, norms'
    affine parameters, BatchNorm statistics), so that no part of the state dict is inert."""
    g = torch.Generator().manual_seed(seed)
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if not t.dtype.is_floating_point:
            continue
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif t.numel() > 1 and bool((t == t.flatten()[0]).all()):
            t.add_(torch.randn(t.shape, generator=g) * 0.05)


def _ours(arch_over: dict, ref_sd: dict, variant: str = "vit_b"):
    arch = sam_arch(variant)
    arch["image_encoder"].update(arch_over)
    model = Sam.from_arch(arch).eval()
    sd, _ = convert_state_dict(ref_sd)
    model.load_state_dict(sd, strict=True)
    return make_promptable(model)


def _compare(ours, ref_predict, image, exact=True):
    """Every prompt of PROMPTS: ``ref_predict(**prompt) -> (masks, iou, low_res)`` against ours."""
    ours.set_image(image)
    for name, prompt in PROMPTS.items():
        for multi in (True, False) if name == "point" else (True,):
            m1, i1, l1 = ref_predict(multimask_output=multi, **prompt)
            m2, i2, l2 = ours.predict(multimask_output=multi, **prompt)
            assert m1.shape == m2.shape and m1.shape[-2:] == image.shape[:2], name
            if exact:
                assert np.array_equal(m1, m2), name
                assert np.array_equal(i1, i2) and np.array_equal(l1, l2), name
            else:
                np.testing.assert_allclose(l2, l1, atol=1e-4, rtol=1e-4, err_msg=name)
                np.testing.assert_allclose(i2, i1, atol=1e-5, rtol=1e-4, err_msg=name)
                assert (m1 == m2).mean() > 0.999, name
            assert 0.01 < m2.mean() < 0.99 or name == "box", (name, m2.mean())  # not a trivial mask


def _meta_sam(img_size=256):
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam as MetaSam, \
        TwoWayTransformer
    torch.manual_seed(0)
    grid = img_size // 16
    model = MetaSam(
        ImageEncoderViT(img_size=img_size, depth=2, embed_dim=64, num_heads=2, use_rel_pos=True,
                        global_attn_indexes=[1], window_size=14, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                        out_chans=256),
        PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(img_size, img_size),
                      mask_in_chans=16),
        MaskDecoder(transformer_dim=256, transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                       num_heads=8))).eval()
    _randomize(model)
    return model


@pytest.fixture(scope="module")
def meta_sam():
    return _meta_sam()


def test_meta_segment_anything_predictor(meta_sam):
    from segment_anything import SamPredictor
    assert detect_format(meta_sam.state_dict()) == "sam"
    ref = SamPredictor(meta_sam)
    image = _image()
    ref.set_image(image)
    ours = _ours(VIT, meta_sam.state_dict())
    _compare(ours, lambda points=None, point_labels=None, boxes=None, **kw: ref.predict(
        point_coords=points, point_labels=point_labels, box=boxes, **kw), image)
    assert torch.equal(ours.image_embedding, ref.get_image_embedding())
    # a mask prompt (the low-res logits of an earlier call) and a new image passed to predict
    _, _, low = ref.predict(**{"point_coords": POINT["points"], "point_labels": POINT["point_labels"]},
                            multimask_output=False)
    m1, i1, _ = ref.predict(point_coords=POINT["points"], point_labels=POINT["point_labels"], mask_input=low)
    m2, i2, _ = ours.predict(mask_input=low, **POINT)
    assert np.array_equal(m1, m2) and np.array_equal(i1, i2)
    other = _image(200, 90, seed=3)
    ref.set_image(other)
    m1, i1, _ = ref.predict(box=BOX["boxes"], return_logits=True)
    m2, i2, _ = ours.predict(other, boxes=BOX["boxes"], return_logits=True)
    assert m2.dtype == np.float32 and np.array_equal(m1, m2) and np.array_equal(i1, i2)


def test_several_boxes_at_once(meta_sam):
    from segment_anything import SamPredictor
    ref = SamPredictor(meta_sam)
    image = _image()
    ref.set_image(image)
    boxes = np.array([[30.0, 20.0, 150.0, 110.0], [5.0, 5.0, 60.0, 40.0]])
    ours = _ours(VIT, meta_sam.state_dict())
    masks, iou, low = ours.predict(image, boxes=boxes)
    assert masks.shape == (2, 3, 120, 170) and iou.shape == (2, 3) and low.shape == (2, 3, 64, 64)
    for i, box in enumerate(boxes):
        m1, i1, l1 = ref.predict(box=box)
        # batched matmuls round differently from one-prompt ones
        assert (masks[i] == m1).mean() > 0.999 and np.allclose(iou[i], i1, atol=1e-5)
        assert np.allclose(low[i], l1, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def mobile_sam_module():
    """``mobile_sam`` imported with timm's model registry restored afterwards (it overwrites tiny_vit_*)."""
    import timm.models._registry as reg
    saved = {k: copy.copy(v) for k, v in vars(reg).items() if isinstance(v, (dict, set)) and not k.startswith("__")}
    with warnings.catch_warnings():  # its deprecated timm imports, its registry overwrites
        warnings.simplefilter("ignore")
        import mobile_sam
        import mobile_sam.modeling
    for k, v in saved.items():
        getattr(reg, k).clear()
        getattr(reg, k).update(v)
    return mobile_sam


def test_mobile_sam_predictor(mobile_sam_module):
    from mobile_sam import SamPredictor
    from mobile_sam.modeling import MaskDecoder, PromptEncoder, Sam as MobileSam, TinyViT, TwoWayTransformer
    torch.manual_seed(0)
    ref_model = MobileSam(
        TinyViT(img_size=1024, in_chans=3, num_classes=1000, window_sizes=[7, 7, 14, 7], drop_path_rate=0.0,
                layer_lr_decay=0.8, **TINY),
        PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16),
        MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                           num_heads=8), transformer_dim=256)).eval()
    _randomize(ref_model)
    ref_model.eval()  # TinyViT caches its attention biases on eval()
    sd = ref_model.state_dict()
    assert detect_format(sd) == "mobilesam" and any(k.startswith("image_encoder.head.") for k in sd)
    ref = SamPredictor(ref_model)
    image = _image()
    ref.set_image(image)
    ours = _ours(TINY, sd, "vit_t")
    _compare(ours, lambda points=None, point_labels=None, boxes=None, **kw: ref.predict(
        point_coords=points, point_labels=point_labels, box=boxes, **kw), image)
    import timm.models._registry as reg
    assert reg._model_entrypoints["tiny_vit_5m_224"].__module__.startswith("timm.")  # timm's own again


def test_transformers_sam_model(meta_sam):
    from transformers import SamConfig, SamModel, SamVisionConfig
    from transformers.models.sam.configuration_sam import SamPromptEncoderConfig
    from segzoo.sam.predictor import transform_coords
    torch.manual_seed(0)
    cfg = SamConfig(vision_config=SamVisionConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                                  global_attn_indexes=[1], mlp_dim=256, image_size=256),
                    prompt_encoder_config=SamPromptEncoderConfig(image_size=256, image_embedding_size=16))
    ref = SamModel(cfg).eval()
    _randomize(ref)
    sd = ref.state_dict()
    assert detect_format(sd) == "transformers"
    ours = _ours(VIT, sd)
    image = _image()
    ours.set_image(image)
    state = ours.__dict__["_sam_image"]
    from segzoo.sam.predictor import resize_image
    pixels = ours.preprocess(torch.as_tensor(resize_image(image, 256)).permute(2, 0, 1)[None].float())
    with torch.no_grad():
        emb = ref.get_image_embeddings(pixels)
    torch.testing.assert_close(emb, state.features, atol=1e-5, rtol=1e-4)
    for name, prompt in PROMPTS.items():
        kw = {}
        if "points" in prompt:
            pts = transform_coords(prompt["points"], image.shape[:2], 256)
            kw["input_points"] = torch.as_tensor(pts, dtype=torch.float)[None, None]
            kw["input_labels"] = torch.as_tensor(prompt["point_labels"])[None, None]
        if "boxes" in prompt:
            box = transform_coords(prompt["boxes"].reshape(2, 2), image.shape[:2], 256).reshape(4)
            kw["input_boxes"] = torch.as_tensor(box, dtype=torch.float)[None, None]
        with torch.no_grad():
            out = ref(image_embeddings=emb, multimask_output=True, **kw)
        masks, iou, low = ours.predict(**prompt)
        np.testing.assert_allclose(low, out.pred_masks[0, 0].numpy(), atol=1e-4, rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(iou, out.iou_scores[0, 0].numpy(), atol=1e-5, rtol=1e-4, err_msg=name)
        ref_masks = ours.postprocess_masks(out.pred_masks[0], state.input_size, state.original_size) > 0
        assert (ref_masks.numpy() == masks).mean() > 0.999, name


def _ssseg_cfg(backbone: dict, img_size: int) -> dict:
    grid = img_size // 16
    return {"backbone": backbone,
            "prompt": {"embed_dim": 256, "image_embedding_size": (grid, grid), "input_image_size": (img_size, img_size),
                       "mask_in_chans": 16},
            "head": {"num_multimask_outputs": 3, "transformer_cfg": {"depth": 2, "embedding_dim": 256, "mlp_dim": 2048,
                                                                     "num_heads": 8},
                     "transformer_dim": 256, "iou_head_depth": 3, "iou_head_hidden_dim": 256}}


def _ssseg_predict(ref):
    return lambda points=None, point_labels=None, boxes=None, **kw: ref.predict(
        point_coords=points, point_labels=point_labels, box=boxes, **kw)


def test_ssseg_sam():
    from ssseg.modules.models.segmentors.sam.sam import SAMPredictor
    backbone = {"depth": 2, "embed_dim": 64, "img_size": 256, "mlp_ratio": 4,
                "norm_cfg": {"type": "LayerNorm", "eps": 1e-6}, "num_heads": 2, "patch_size": 16, "qkv_bias": True,
                "use_rel_pos": True, "global_attn_indexes": [1], "window_size": 14, "out_chans": 256, "type": "SAMViT"}
    torch.manual_seed(0)
    ref = SAMPredictor(sam_cfg=_ssseg_cfg(backbone, 256), device="cpu")
    _randomize(ref.model)
    sd = {"model": ref.model.state_dict()}  # SSSegmentation's checkpoint wrapper
    assert detect_format(sd) == "sam"
    image = _image()
    ref.setimage(image)
    _compare(_ours(VIT, sd), _ssseg_predict(ref), image)


def test_ssseg_mobilesam():
    from ssseg.modules.models.segmentors.mobilesam.mobilesam import MobileSAMPredictor
    backbone = {"structure_type": "shrunk", "img_size": 1024, "in_chans": 3, **TINY,
                "window_sizes": [7, 7, 14, 7], "mlp_ratio": 4.0,
                "drop_rate": 0.0, "drop_path_rate": 0.0, "use_checkpoint": False, "mbconv_expand_ratio": 4.0,
                "local_conv_size": 3, "pretrained": False, "pretrained_model_path": "", "type": "MobileSAMTinyViT"}
    torch.manual_seed(0)
    ref = MobileSAMPredictor(sam_cfg=_ssseg_cfg(backbone, 1024), device="cpu")
    _randomize(ref.model)
    ref.model.eval()
    sd = ref.model.state_dict()
    assert detect_format(sd) == "mobilesam"
    image = _image()
    ref.setimage(image)
    _compare(_ours(TINY, sd, "vit_t"), _ssseg_predict(ref), image)


class _DiscPrompts(torch.nn.Module):
    """Prompt encoder stand-in: passes the points (input frame) through."""

    def forward(self, points=None, boxes=None, masks=None):
        return points[0].float(), None

    def get_dense_pe(self):
        return torch.zeros(1)


class _DiscDecoder(torch.nn.Module):
    """Mask decoder stand-in: four discs of growing radius around the prompt point (logits fall by 1 per 4
    pixels), plus a little of the image embedding; IoU scores vary with the point."""

    radii = (12.0, 24.0, 40.0, 70.0)

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output):
        size = 4 * image_embeddings.shape[-1]
        scale = 256 / size  # the encoder's input frame is 256 wide
        tex = torch.nn.functional.interpolate(image_embeddings[:, :1], size=(size, size), mode="bilinear")[0, 0]
        c = (torch.arange(size, dtype=torch.float) + 0.5) * scale
        pts = sparse_prompt_embeddings[:, 0, :]
        dx = c[None, None, :] - pts[:, 0, None, None]
        dy = c[None, :, None] - pts[:, 1, None, None]
        d = torch.sqrt(dx ** 2 + dy ** 2)
        r = torch.tensor(self.radii)
        logits = (r[None, :, None, None] - d[:, None]) / 4 + 2 * tex
        iou = 0.7 + 0.3 * torch.sin(pts[:, :1] / 17 + pts[:, 1:] / 29 + torch.arange(4.0))
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return logits[:, keep], iou[:, keep]


@pytest.mark.parametrize("crop_n_layers,min_area", [(1, 0), (0, 400)])
def test_automatic_mask_generator(meta_sam, crop_n_layers, min_area):
    """Same grid and thresholds as segment_anything's generator on a 256x256 image: the same masks
    (sorted by area on both sides), boxes, scores, points and crop boxes. Random weights give masks
    that all span the image, so both networks get the same stand-in prompt encoder and mask decoder
    (discs around each prompt point, see ``_DiscDecoder``) and keep their (equal) image encoders:
    what is compared is the generator (grid, batches, filters, NMS, crops, RLE, small regions)."""
    from segment_anything import SamAutomaticMaskGenerator
    image = _image(256, 256, seed=5)
    ref_model = copy.deepcopy(meta_sam)
    ours = _ours(VIT, meta_sam.state_dict())
    for m in (ref_model, ours):
        m.prompt_encoder, m.mask_decoder = _DiscPrompts(), _DiscDecoder()
    kw = dict(points_per_side=8, points_per_batch=24, pred_iou_thresh=0.6, stability_score_thresh=0.75,
              box_nms_thresh=0.7, crop_n_layers=crop_n_layers, crop_n_points_downscale_factor=2,
              min_mask_region_area=min_area, output_mode="uncompressed_rle")
    ref = sorted(SamAutomaticMaskGenerator(ref_model, **kw).generate(image), key=lambda a: -a["area"])
    got = AutomaticMaskGenerator(ours, **kw).generate(image)
    assert len(got) == len(ref) > 5
    assert [a["area"] for a in got] == sorted((a["area"] for a in got), reverse=True)
    for a, b in zip(got, ref):
        assert a["segmentation"] == b["segmentation"] and a["area"] == b["area"]
        assert a["bbox"] == b["bbox"] and a["crop_box"] == b["crop_box"]
        assert a["point_coords"][0] == pytest.approx(b["point_coords"][0])
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-6)
        assert a["stability_score"] == pytest.approx(b["stability_score"], abs=1e-6)
    if crop_n_layers:
        assert len({tuple(a["crop_box"]) for a in got}) > 1
    binary = AutomaticMaskGenerator(ours, **dict(kw, output_mode="binary_mask")).generate(image)
    assert all(np.array_equal(a["segmentation"], rle_to_mask(b["segmentation"])) for a, b in zip(binary, got))


def test_rle_round_trip_and_coco_string():
    rng = np.random.default_rng(0)
    masks = torch.as_tensor(rng.random((3, 7, 5)) > 0.5)
    masks[1] = True
    masks[2, 0, 0] = False
    for m, rle in zip(masks, mask_to_rle(masks)):
        assert np.array_equal(rle_to_mask(rle), m.numpy()) and rle_area(rle) == int(m.sum())
    # pycocotools' string for these counts (its rleToString: 5-bit groups, deltas from the count two back)
    assert rle_to_coco_string({"size": [2, 3], "counts": [1, 2, 3]})["counts"] == "123"
    assert rle_to_coco_string({"size": [8, 8], "counts": [0, 40, 24]})["counts"] == "0X1h0"


def test_records_build_at_published_sizes():
    """The zoo records' archs build (on the meta device) with the published parameter counts (Meta's
    ViT-B/L/H SAM: 93.7M / 312.3M / 641.1M; MobileSAM without TinyViT's unused classifier: 9.8M)."""
    from segzoo.zoo.sam import RECORDS
    sizes = {}
    with torch.device("meta"):
        for rec in RECORDS:
            assert rec.arch["segmentor"] == "sam" and rec.num_classes == 0
            sizes[rec.name] = sum(p.numel() for p in Sam.from_arch(rec.arch).parameters())
    assert sizes == {"sam_vit_base": 93735472, "sam_vit_large": 312342832, "sam_vit_huge": 641090608,
                     "mobilesam_tinyvit": 9808452}
    assert [w["format"] for w in RECORDS[0].weights] == ["sam", "transformers", "transformers"]


def test_checkpoint_file_round_trip(meta_sam, tmp_path):
    """A Meta-layout file read as segzoo reads checkpoints, converted and loaded strictly."""
    from segzoo.convert.checkpoint import read_state_dict
    path = tmp_path / "sam_vit_test.pth"
    torch.save(meta_sam.state_dict(), path)
    sd, fmt = convert_state_dict(read_state_dict(path))
    assert fmt == "sam"
    model = Sam.from_arch(dict(sam_arch("vit_b"), image_encoder=dict(sam_arch("vit_b")["image_encoder"], **VIT)))
    model.load_state_dict(sd, strict=True)
    assert model.num_classes == 0 and model.img_size == 256


def test_cli_outputs(tmp_path):
    import json
    from segzoo.sam.outputs import parse_box, parse_labels, parse_points, write_prompt_result
    assert parse_points("10,20;30.5,40").tolist() == [[10, 20], [30.5, 40]]
    assert parse_labels(None, 2).tolist() == [1, 1] and parse_labels("1,0", 2).tolist() == [1, 0]
    assert parse_box("1,2,3,4").tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="--points"):
        parse_points("1,2,3")
    masks = np.zeros((3, 5, 6), bool)
    masks[1, 1:3, 2:4] = True
    info = write_prompt_result(masks, np.array([0.1, 0.9, 0.3]), tmp_path / "m.png")
    assert info["masks"][0]["area"] == 4 and (tmp_path / "m.png").is_file()
    assert json.loads((tmp_path / "m.json").read_text()) == info
    assert np.array_equal(rle_to_mask(info["masks"][0]["segmentation"]), masks[1])
