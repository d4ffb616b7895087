"""The Segment Anything network: an image encoder (SAM's ViT or MobileSAM's TinyViT), the prompt
encoder and the mask decoder. Networks only; prompting images is ``segzoo.sam``'s."""
from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..segmentor import Segmentor
from .prompt import MaskDecoder, PromptEncoder
from .tiny_vit import TinyViTImageEncoder
from .vit import ViTImageEncoder

__all__ = ["Sam", "build_sam", "ENCODERS", "sam_arch"]

#: arch["image_encoder"]["type"] -> class (keyword arguments: the rest of that dict)
ENCODERS = {"vit": ViTImageEncoder, "tiny_vit": TinyViTImageEncoder}

_PIXEL_MEAN = (123.675, 116.28, 103.53)
_PIXEL_STD = (58.395, 57.12, 57.375)

def sam_arch(variant: str) -> dict:
    """The ``arch`` of a published SAM: ``vit_b``, ``vit_l``, ``vit_h`` (Meta) or ``vit_t`` (MobileSAM),
    as the zoo records declare it."""
    from ...zoo.sam import ARCHS
    if variant not in ARCHS:
        raise ValueError(f"unknown SAM variant {variant!r}; known: {', '.join(ARCHS)}")
    return copy.deepcopy(ARCHS[variant])


class Sam(Segmentor):
    """Segment Anything: ``image_encoder`` (normalised, zero-padded ``img_size`` square images -> (B, C,
    img_size/16, img_size/16) embeddings), ``prompt_encoder`` and ``mask_decoder``. State-dict keys are
    Meta's ``segment_anything`` ones (MobileSAM's for the TinyViT encoder).

    ``model(images)`` returns the image embeddings; with prompts, ``(low_res_logits, iou_predictions)``
    (see :meth:`decode`). No class logits: ``num_classes`` is 0."""

    #: prompts instead of classes: ``create_model`` gives it ``segzoo.sam.PromptableModel``'s methods
    promptable = True

    mask_threshold: float = 0.0
    LOSSES: dict = {}

    def __init__(self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder,
                 pixel_mean=_PIXEL_MEAN, pixel_std=_PIXEL_STD):
        nn.Module.__init__(self)
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(list(pixel_mean), dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(list(pixel_std), dtype=torch.float32).view(-1, 1, 1), False)
        self.align_corners = False
        self.record = None
        self.arch: dict = {}

    @classmethod
    def from_arch(cls, arch: Mapping[str, Any]) -> "Sam":
        """A randomly initialised network from an ``arch`` mapping (see :func:`sam_arch`)."""
        enc = dict(arch["image_encoder"])
        kind = enc.pop("type")
        if kind not in ENCODERS:
            raise ValueError(f"unknown SAM image encoder {kind!r}; known: {', '.join(ENCODERS)}")
        pe = dict(arch.get("prompt_encoder", {}))
        dim = int(pe.get("embed_dim", 256))
        encoder = ENCODERS[kind](out_chans=dim, **enc)
        size = encoder.img_size
        grid = (size // 16, size // 16)
        prompt = PromptEncoder(dim, grid, (size, size), int(pe.get("mask_in_chans", 16)))
        decoder = MaskDecoder(dim, **dict(arch.get("mask_decoder", {})))
        model = cls(encoder, prompt, decoder, arch.get("pixel_mean", _PIXEL_MEAN), arch.get("pixel_std", _PIXEL_STD))
        model.arch = copy.deepcopy(dict(arch, num_classes=0))
        return model

    @property
    def num_classes(self) -> int:
        return 0

    @property
    def img_size(self) -> int:
        """The side of the square the encoder reads (images are resized to it on their long side, then padded)."""
        return int(self.image_encoder.img_size)

    @property
    def min_input_size(self) -> int:
        return 1

    @property
    def frozen_inference_pays(self) -> bool:
        return False

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (B, 3, h, w) 0..255 RGB images (long side ``img_size``) and zero-pad them to the square."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(self, masks: torch.Tensor, input_size, original_size) -> torch.Tensor:
        """Low-resolution mask logits -> logits at ``original_size`` (h, w): upsampled to the square, the
        padding cut (``input_size``: the resized image's size), resized again."""
        masks = F.interpolate(masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        masks = masks[..., :int(input_size[0]), :int(input_size[1])]
        return F.interpolate(masks, tuple(int(s) for s in original_size), mode="bilinear", align_corners=False)

    def decode(self, image_embeddings: torch.Tensor, points: torch.Tensor | None = None,
               point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               mask_inputs: torch.Tensor | None = None, multimask_output: bool = True):
        """Mask logits (B, K, 4h, 4w) and predicted IoUs (B, K) for B prompts on one image's embedding
        (1, C, h, w): ``points`` (B, N, 2) x, y in the encoder's input frame, ``point_labels`` (B, N)
        (1 foreground, 0 background, -1 ignored), ``boxes`` (B, 4) x0 y0 x1 y1, ``mask_inputs`` (B, 1, 4h, 4w)
        logits of an earlier prediction. K is 3 with ``multimask_output``, else 1."""
        sparse, dense = self.prompt_encoder(None if points is None else (points, point_labels), boxes, mask_inputs)
        return self.mask_decoder(image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense,
                                 multimask_output)

    def forward(self, images: torch.Tensor, points=None, point_labels=None, boxes=None, mask_inputs=None,
                multimask_output: bool = True):
        """``images``: preprocessed (1, 3, img_size, img_size). Without prompts, the image embeddings;
        with, :meth:`decode`'s (low_res_logits, iou_predictions)."""
        emb = self.image_encoder(images)
        if points is None and boxes is None and mask_inputs is None:
            return emb
        return self.decode(emb, points, point_labels, boxes, mask_inputs, multimask_output)

    def forward_upsampled(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("SAM predicts masks from prompts, not class logits: use predict(image, points=..., boxes=...)")


def build_sam(variant_or_arch) -> Sam:
    """A randomly initialised SAM: a variant name (see :func:`sam_arch`) or an arch mapping."""
    arch = sam_arch(variant_or_arch) if isinstance(variant_or_arch, str) else variant_or_arch
    return Sam.from_arch(arch)
