"""Model cards rendered from the records: the catalogue (MODEL_CARDS.md) and one card per model."""
from __future__ import annotations

from collections import defaultdict

from .registry import get_record, list_models

__all__ = ["render_model_cards", "render_model_card"]


def _source(rec) -> str:
    s = rec.source
    if s.get("project") == "sssegmentation":
        return f"SSSegmentation `{s['config']}`"
    if s.get("repo_id"):
        return f"transformers `{s['repo_id']}`"
    return s.get("project", "")


def _weights(rec) -> str:
    parts = []
    for w in rec.weights:
        if "hf_hub_id" in w:
            parts.append(f"hf-hub:{w['hf_hub_id']}/{w['filename']}")
        elif "url" in w:
            parts.append(f"[{w['filename']}]({w['url']})")
    return "<br>".join(parts) or "-"


def _inference(rec) -> str:
    inf = rec.inference
    text = inf.get("mode", "whole")
    if inf.get("mode") == "slide" and inf.get("crop_size"):
        text += f" {inf['crop_size'][0]}x{inf['crop_size'][1]}/{inf['stride'][0]}"
    if inf.get("flip"):
        text += " +flip"
    if len(inf.get("scales") or [1]) > 1:
        text += " +ms"
    return text


def render_model_cards() -> str:
    names = list_models()
    by_arch = defaultdict(list)
    for n in names:
        by_arch[get_record(n).architecture].append(get_record(n))
    lines = ["# segzoo model cards", "",
             "Generated from the registry by `python scripts/gen_model_cards.py`; do not edit by hand.",
             "mIoU is the value the source reports (single scale unless the test protocol says otherwise).", "",
             f"{len(names)} models, {sum(1 for n in names if get_record(n).weights)} with weights.", ""]
    for arch in sorted(by_arch):
        lines += [f"## {arch}", "",
                  "| name | backbone | dataset | classes | mIoU | train crop | test protocol | source | weights |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in by_arch[arch]:
            miou = f"{r.metrics['mIoU']:.2f}" if "mIoU" in r.metrics else "-"
            lines.append(f"| `{r.name}` | {r.backbone} | {r.dataset} | {r.num_classes} | {miou} | "
                         f"{r.crop_size[0]}x{r.crop_size[1]} | {_inference(r)} | {_source(r)} | {_weights(r)} |")
        lines.append("")
    return "\n".join(lines)


def render_model_card(record, num_classes: int | None = None) -> str:
    """A Hub README for one model (used by save_pretrained / push_to_hub)."""
    r = record
    miou = f"{r.metrics['mIoU']:.2f}" if "mIoU" in r.metrics else "not reported"
    return "\n".join([
        "---", "library_name: segzoo", "pipeline_tag: image-segmentation", "tags: [semantic-segmentation, segzoo]", "---",
        f"# {r.name}", "",
        f"{r.architecture} with a {r.backbone} backbone, trained on {r.dataset} "
        f"({num_classes or r.num_classes} classes). Converted from {_source(r)}.", "",
        f"- mIoU reported by the source: {miou}",
        f"- test protocol: {_inference(r)}; normalisation mean {r.normalization.get('mean')} std {r.normalization.get('std')}",
        "", "```python", "import segzoo", 'model = segzoo.create_model("hf-hub:<this repo>")',
        'labels = model.predict("image.jpg")', "```", ""])
