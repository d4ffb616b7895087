"""Model cards rendered from the records: the catalogue (MODEL_CARDS.md) and one card per model."""
from __future__ import annotations

from collections import defaultdict

from .registry import get_record, list_models

__all__ = ["render_model_cards", "render_model_card"]


def _source(s) -> str:
    """A record's ``source`` mapping as text."""
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


def _twins(records) -> list:
    """(transformers record, SSSegmentation record) pairs where both exist for one plain name."""
    by_name = {r.name: r for r in records}
    return [(by_name[n[:-len("_ssseg")]], r) for n, r in by_name.items()
            if n.endswith("_ssseg") and n[:-len("_ssseg")] in by_name]


def _miou(r) -> str:
    return f"{r.metrics['mIoU']:.2f}" if "mIoU" in r.metrics else "-"


def render_model_cards() -> str:
    names = list_models()
    records = [get_record(n) for n in names]
    from .models import count_parameters
    params = {r.name: count_parameters(r.arch) for r in records}
    by_arch = defaultdict(list)
    for r in records:
        by_arch[r.architecture].append(r)
    lines = ["# segzoo model cards", "",
             "Generated from the registry by `python scripts/gen_model_cards.py`; do not edit by hand.",
             "mIoU is the value the source reports (single scale unless the test protocol says otherwise; "
             "the Hub records cite their sources in `segzoo info NAME`). Params: the inference network "
             "(backbone + decode head), in millions; the training-only auxiliary heads are not counted.", "",
             f"{len(names)} models, {sum(1 for r in records if r.weights)} with weights.", "",
             "## Plain name or `_ssseg`?", "",
             "Where SSSegmentation trained an architecture that a transformers Hub checkpoint also covers, the "
             "plain name is the Hub checkpoint (the original authors' weights, converted by transformers) and "
             "the `_ssseg` name is SSSegmentation's own training. Both build the same segzoo network with "
             "their own test protocol; pick the higher reported mIoU for accuracy, the plain name to match "
             "results published with the transformers checkpoint.", "",
             "| plain name (Hub) | mIoU | `_ssseg` name | mIoU | higher reported mIoU |", "|---|---|---|---|---|"]
    for hub, ss in _twins(records):
        both = "mIoU" in hub.metrics and "mIoU" in ss.metrics
        best = (hub.name if hub.metrics["mIoU"] >= ss.metrics["mIoU"] else ss.name) if both else "-"
        lines.append(f"| `{hub.name}` | {_miou(hub)} | `{ss.name}` | {_miou(ss)} | `{best}` |")
    lines.append("")
    for arch in sorted(by_arch):
        lines += [f"## {arch}", "",
                  "| name | backbone | dataset | classes | params (M) | mIoU | train crop | test protocol | source | weights |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in by_arch[arch]:
            lines.append(f"| `{r.name}` | {r.backbone} | {r.dataset} | {r.num_classes} | {params[r.name] / 1e6:.1f} | "
                         f"{_miou(r)} | {r.crop_size[0]}x{r.crop_size[1]} | {_inference(r)} | {_source(r.source)} | "
                         f"{_weights(r)} |")
        lines.append("")
    return "\n".join(lines)


def _origin(record, provenance) -> str:
    """What the weights are, in one sentence, from the provenance ``create_model`` recorded."""
    p = provenance or {}
    init, base, fmt = p.get("init"), p.get("model") or record.name, p.get("format")
    src = _source(p.get("source") or record.source)
    if init == "random":
        text = ("Randomly initialised, with ImageNet weights in the backbone" if p.get("pretrained_backbone")
                else "Randomly initialised (no pretrained weights)")
    elif init == "pretrained":
        text = (f"The weights of `{base}`, converted from {src} ({fmt} checkpoint)" if fmt != "segzoo"
                else f"The weights of `{base}` ({src})")
    elif init == "checkpoint":
        text = f"Weights loaded from `{p.get('checkpoint')}` ({fmt} format) into the `{base}` architecture"
        if p.get("previous"):
            text += ". Before that: " + _origin(record, p["previous"]).rstrip(".")
    else:
        text = f"From {src}" if src else "Of unknown origin"
    new = p.get("new_classifier")
    if new:
        text += (f"; fine-tuned from them to {new['num_classes']} classes (new classifier layers "
                 f"{', '.join(new.get('layers') or [])} replace the {new.get('was')}-class ones)")
    return text + "."


def render_model_card(record, provenance=None) -> str:
    """A Hub README for one model (used by save_pretrained / push_to_hub): what it is, where its
    weights come from (``provenance``, as ``create_model`` recorded it) and how to load it."""
    r = record
    miou = _miou(r) if "mIoU" in r.metrics else "not reported"
    classes = f"{r.num_classes} classes" + (f" ({', '.join(r.class_names[:8])}{', ...' if len(r.class_names) > 8 else ''})"
                                            if r.class_names else "")
    return "\n".join([
        "---", "library_name: segzoo", "pipeline_tag: image-segmentation", "tags: [semantic-segmentation, segzoo]", "---",
        f"# {r.name}", "",
        f"{r.architecture} with a {r.backbone} backbone, {classes}"
        + (f", for {r.dataset}" if r.dataset else "") + ".", "",
        _origin(r, provenance), "",
        f"- mIoU reported by the source: {miou}",
        f"- test protocol: {_inference(r)}; normalisation mean {r.normalization.get('mean')} std {r.normalization.get('std')}",
        "", "```python", "import segzoo", 'model = segzoo.create_model("hf-hub:<this repo>")',
        'labels = model.predict("image.jpg")', "```", ""])
