"""segzoo's promptable SAM inference and Mask2Former semantic inference against the reference
implementations, same weights, same image, same run, on the CPU.

1. ``auto``: SAM ViT-B automatic mask generation, segzoo's ``AutomaticMaskGenerator`` against
   segment_anything's ``SamAutomaticMaskGenerator``, 32 x 32 points, batches of 64, on a 512 x 512
   photo (``docs/assets/chelsea.jpg``, short side resized to 512, centre crop). Random weights give
   few or no masks through Meta's default thresholds, so a second setting relaxes them
   (``pred_iou_thresh=0``, ``stability_score_thresh=0``: both filters off) so that every mask goes
   through every stage (stability score, boxes, RLE, NMS). Random masks span the image, so the box NMS
   leaves one; ``--settings all`` also turns the NMS off (``box_nms_thresh=1``) and compares every mask.
   Time per image (embedding included), the number of masks on each side and whether they are
   identical (the multisets of uncompressed RLEs).
2. ``predictor``: 10 single-point prompts (multimask) on one embedding: ``set_image`` once (not
   timed), then 10 ``predict`` calls; segzoo's ``PromptableModel`` against segment_anything's
   ``SamPredictor``; outputs (masks, IoU scores, low-resolution logits) compared for equality.
3. ``mask2former``: Mask2Former Swin-T (the ``facebook/mask2former-swin-tiny-ade-semantic``
   configuration, full depth, random weights) semantic inference on a 512 x 512 input: transformers'
   ``Mask2FormerForUniversalSegmentation`` forward + ``post_process_semantic_segmentation(target_sizes=
   [(512, 512)])`` against segzoo's ``model.forward_upsampled(x).argmax(1)`` (the eval output, the
   class scores at 384 x 384 as transformers computes them, resized to the input, then the label
   map), the segzoo model built by ``create_model("mask2former_swin_tiny_ade20k", checkpoint=<the
   reference's state dict file>)``. Label-map agreement is the fraction of equal pixels.

The SAM weights: ``segzoo.create_model("sam_vit_base")`` (random), whose state dict (Meta's keys)
loads into ``segment_anything.sam_model_registry["vit_b"]()``.

Time: in this process, torch threads ``--threads`` (2), one warm-up per side (the automatic generator:
none of its own when the predictor case ran first, whose embeddings warm both networks up), then the
sides alternate run by run; median of the runs (``--runs``; ``--auto-runs``, default 1: a 32 x 32 run
takes minutes on two threads). Peak memory (unless ``--no-memory``; for the automatic generator only
with ``--auto-memory``, it costs one more run per side and setting): one child process per (case,
side) that imports the same modules, builds only its side's network from the state dict file this
process saved, runs the case once and reports its peak RSS (``ru_maxrss``) and the peak RSS of the
run minus the RSS before it (Linux: the peak mark is reset before the run), as
``benchmarks/bench_inference.py`` does.

    python benchmarks/bench_promptable.py                       # everything
    python benchmarks/bench_promptable.py --cases predictor mask2former --runs 5 --json out.json
    python benchmarks/bench_promptable.py --quick               # smoke run: 8 x 8 points, 1 run, no memory
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

import segzoo  # noqa: E402
import segzoo.convert  # noqa: E402,F401
import segzoo.models  # noqa: E402,F401

IMAGE = os.path.join(ROOT, "docs", "assets", "chelsea.jpg")
SIZE = 512
CHILD_TAG = "BENCH_CHILD_RESULT "
CASES = ("auto", "predictor", "mask2former")
SIDES = ("reference", "segzoo")
#: the automatic generator's settings: Meta's defaults; both filters off; both filters and the box NMS off
#: (``box_nms_thresh=1``: only boxes with an IoU above 1 would be suppressed), so that every mask of every
#: prompt comes out and is compared
AUTO_SETTINGS = {"default": {}, "relaxed": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
                 "all": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}}
M2F_REPO = "facebook/mask2former-swin-tiny-ade-semantic"
M2F_NAME = "mask2former_swin_tiny_ade20k"
N_PROMPTS = 10


# ---- inputs and networks ---------------------------------------------------------------------------
def photo(size: int = SIZE) -> np.ndarray:
    """docs/assets/chelsea.jpg, short side resized to ``size`` (PIL bilinear), centre crop: HxWx3 uint8."""
    from PIL import Image
    im = Image.open(IMAGE).convert("RGB")
    scale = size / min(im.size)
    w, h = max(size, round(im.size[0] * scale)), max(size, round(im.size[1] * scale))
    im = im.resize((w, h), Image.BILINEAR)
    x0, y0 = (w - size) // 2, (h - size) // 2
    return np.ascontiguousarray(np.array(im.crop((x0, y0, x0 + size, y0 + size))))


def prompt_points(n: int = N_PROMPTS, size: int = SIZE) -> np.ndarray:
    """n (x, y) points spread over the image (a fixed pseudo-random draw)."""
    return np.random.default_rng(0).uniform(0.05 * size, 0.95 * size, (n, 2)).round(1)


def build_sam(side: str, sd_path: str | None = None):
    """The SAM ViT-B of one side; random (segzoo) when ``sd_path`` is None, else that state dict's."""
    if side == "segzoo":
        torch.manual_seed(0)
        model = segzoo.create_model("sam_vit_base")
        if sd_path is not None:
            model.load_state_dict(torch.load(sd_path, weights_only=True), strict=True)
        return model.eval()
    from segment_anything import sam_model_registry
    model = sam_model_registry["vit_b"]()
    model.load_state_dict(torch.load(sd_path, weights_only=True), strict=True)
    return model.eval()


def build_m2f(side: str, sd_path: str | None = None):
    """Mask2Former Swin-T ADE20K of one side: transformers' (random when ``sd_path`` is None), or
    segzoo's from the reference's state dict file."""
    if side == "segzoo":
        return segzoo.create_model(M2F_NAME, checkpoint=sd_path).eval()
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig
    from test_parity_mask2former import HUB_SWIN, _randomize_all_
    pub = HUB_SWIN[M2F_REPO]
    swin = SwinConfig(embed_dim=pub["embed_dim"], depths=pub["depths"], num_heads=pub["num_heads"],
                      window_size=pub["window_size"], drop_path_rate=0.3,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=swin, num_labels=pub["num_labels"])
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(cfg).eval()
    if sd_path is None:
        _randomize_all_(model)
    else:
        model.load_state_dict(torch.load(sd_path, weights_only=True), strict=True)
    return model.eval()


# ---- the runners: fn() -> output ---------------------------------------------------------------------
def auto_runner(side: str, model, image: np.ndarray, settings: dict, points_per_side: int):
    kw = dict(points_per_side=points_per_side, points_per_batch=64, output_mode="uncompressed_rle", **settings)
    if side == "segzoo":
        from segzoo.sam.automatic import AutomaticMaskGenerator
        gen = AutomaticMaskGenerator(model, **kw)
    else:
        from segment_anything import SamAutomaticMaskGenerator
        gen = SamAutomaticMaskGenerator(model, **kw)
    return lambda: gen.generate(image)


def predictor_runner(side: str, model, image: np.ndarray, points: np.ndarray):
    """Embeds ``image`` now (not timed); the runner makes one predict call per point."""
    labels = np.array([1])
    if side == "segzoo":
        model.set_image(image)
        return lambda: [model.predict(points=p[None], point_labels=labels, multimask_output=True) for p in points]
    from segment_anything import SamPredictor
    pred = SamPredictor(model)
    pred.set_image(image)
    return lambda: [pred.predict(point_coords=p[None], point_labels=labels, multimask_output=True) for p in points]


def m2f_input(size: int = SIZE) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))


def m2f_runner(side: str, model, x: torch.Tensor):
    if side == "segzoo":
        def run():
            with torch.inference_mode():
                return model.forward_upsampled(x).argmax(1)[0]
        return run
    from transformers import Mask2FormerImageProcessor
    proc = Mask2FormerImageProcessor()

    def run_ref():
        with torch.inference_mode():
            out = model(pixel_values=x)
            return proc.post_process_semantic_segmentation(out, target_sizes=[tuple(x.shape[-2:])])[0]
    return run_ref


# ---- timing ------------------------------------------------------------------------------------------
def bench(fns: dict, runs: int, warmup: dict | None = None) -> tuple:
    """Median seconds per side (one warm-up each: ``fns``, or ``warmup`` where given, none if it is
    empty; then the sides alternating) and each side's last output."""
    for k, fn in (fns if warmup is None else warmup).items():
        fn()
    times: dict = {k: [] for k in fns}
    outs: dict = {}
    for _ in range(runs):
        for k, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def _rle_key(ann: dict) -> tuple:
    seg = ann["segmentation"]
    return (tuple(seg["size"]), tuple(int(c) for c in seg["counts"]))


def compare_auto(ref: list, ours: list) -> dict:
    """Masks (RLE multisets) equal, and the largest score difference between the matched masks."""
    same = sorted(map(_rle_key, ref)) == sorted(map(_rle_key, ours))
    out = {"masks_identical": same}
    if same:
        by_rle = {}
        for a in ref:
            by_rle.setdefault(_rle_key(a), []).append(a)
        diff = 0.0
        for b in ours:
            a = by_rle[_rle_key(b)].pop()
            diff = max(diff, abs(a["predicted_iou"] - b["predicted_iou"]),
                       abs(a["stability_score"] - b["stability_score"]))
            out.setdefault("bbox_equal", True)
            out["bbox_equal"] &= list(a["bbox"]) == list(b["bbox"])
        out["max_score_diff"] = diff
    return out


def compare_predictor(ref: list, ours: list) -> dict:
    masks = all(np.array_equal(a[0], b[0]) for a, b in zip(ref, ours))
    scores = max(float(np.abs(a[1] - b[1]).max()) for a, b in zip(ref, ours))
    logits = max(float(np.abs(a[2] - b[2]).max()) for a, b in zip(ref, ours))
    exact = all(all(np.array_equal(x, y) for x, y in zip(a, b)) for a, b in zip(ref, ours))
    return {"masks_equal": masks, "outputs_identical": exact, "max_iou_diff": scores, "max_logit_diff": logits}


# ---- memory: one child per (case, side) -------------------------------------------------------------
from bench_inference import _reset_peak_rss, _rss_now_mib, _rss_peak_mib  # noqa: E402  (one copy of these)


def make_run(spec: dict):
    """The runner of a (case, side) built from the saved state dict (children)."""
    case, side = spec["case"], spec["side"]
    if case == "mask2former":
        return m2f_runner(side, build_m2f(side, spec["state_dict"]), m2f_input(spec["size"]))
    model = build_sam(side, spec["state_dict"])
    image = photo(spec["size"])
    if case == "predictor":
        return predictor_runner(side, model, image, prompt_points(N_PROMPTS, spec["size"]))
    return auto_runner(side, model, image, AUTO_SETTINGS[spec["setting"]], spec["points_per_side"])


def child_main(spec: dict) -> int:
    torch.set_num_threads(spec["threads"])
    run = make_run(spec)
    gc.collect()
    build_peak = _rss_peak_mib()
    before = _rss_now_mib()
    reset = before is not None and _reset_peak_rss()
    t0 = time.perf_counter()
    run()
    t1 = time.perf_counter()
    run_peak = _rss_peak_mib()
    print(CHILD_TAG + json.dumps({"peak_rss_mib": max(build_peak, run_peak), "rss_before_mib": before,
                                  "inference_rss_mib": None if before is None else run_peak - before,
                                  "peak_was_reset": reset, "run_s": t1 - t0}), flush=True)
    return 0


def measure_memory(spec: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    if os.name == "posix" and os.path.exists("/bin/sh"):
        cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd]  # a fresh ru_maxrss (it survives execve)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_TAG):
            return json.loads(line[len(CHILD_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    print(f"    memory child {spec['case']}/{spec['side']} failed (exit {proc.returncode}): " + " | ".join(tail))
    return {"error": f"exit {proc.returncode}: {tail[-1] if tail else ''}"}


# ---- the cases ---------------------------------------------------------------------------------------
def _memory(args, tmp: str, **spec) -> dict:
    if not args.memory:
        return {}
    spec = dict(spec, threads=args.threads, size=args.size, points_per_side=args.points_per_side)
    return {side: measure_memory(dict(spec, side=side)) for side in SIDES}


def case_sam(args, tmp: str, cases: list) -> list:
    rows = []
    ours = build_sam("segzoo")
    sd_path = os.path.join(tmp, "sam_vit_b.pth")
    torch.save(ours.state_dict(), sd_path)
    ref = build_sam("reference", sd_path)
    models = {"reference": ref, "segzoo": ours}
    image = photo(args.size)
    if "predictor" in cases:  # first: its set_image calls are the warm-up of the automatic runs too
        points = prompt_points(N_PROMPTS, args.size)
        fns = {s: predictor_runner(s, m, image, points) for s, m in models.items()}
        times, outs = bench(fns, args.runs)
        row = {"case": "predictor", "setting": f"{N_PROMPTS} points", "image": [args.size, args.size],
               "unit": f"s/{N_PROMPTS} prompts", "times_s": times, **compare_predictor(outs["reference"],
                                                                                      outs["segzoo"]),
               "memory": _memory(args, tmp, case="predictor", state_dict=sd_path)}
        rows.append(row)
        print_row(row)
    if "auto" in cases:
        warm = {} if "predictor" in cases else \
            {s: auto_runner(s, m, image, AUTO_SETTINGS["relaxed"], 2) for s, m in models.items()}
        for setting in args.settings:
            over = AUTO_SETTINGS[setting]
            fns = {s: auto_runner(s, m, image, over, args.points_per_side) for s, m in models.items()}
            times, outs = bench(fns, args.auto_runs, warm)
            warm = {}
            row = {"case": "auto", "setting": setting, "settings": over, "points_per_side": args.points_per_side,
                   "image": [args.size, args.size], "unit": "s/image", "times_s": times,
                   "masks": {s: len(o) for s, o in outs.items()}, **compare_auto(outs["reference"], outs["segzoo"]),
                   "memory": _memory(args, tmp, case="auto", setting=setting, state_dict=sd_path)
                   if args.auto_memory else {}}
            rows.append(row)
            print_row(row)
    return rows


def case_m2f(args, tmp: str) -> list:
    ref = build_m2f("reference")
    sd_path = os.path.join(tmp, "mask2former_swin_tiny_ade.pth")
    torch.save(ref.state_dict(), sd_path)
    ours = build_m2f("segzoo", sd_path)
    x = m2f_input(args.size)
    fns = {"reference": m2f_runner("reference", ref, x), "segzoo": m2f_runner("segzoo", ours, x)}
    times, outs = bench(fns, args.runs)
    agree = float((outs["reference"] == outs["segzoo"]).float().mean())
    row = {"case": "mask2former", "setting": "swin-t ade, forward_upsampled+argmax", "image": [args.size, args.size],
           "unit": "s/image", "times_s": times, "label_agreement": agree,
           "memory": _memory(args, tmp, case="mask2former", state_dict=sd_path)}
    rows = [row]
    print_row(row)
    return rows


# ---- output ------------------------------------------------------------------------------------------
def _ratio(row: dict) -> float:
    return row["times_s"]["reference"] / row["times_s"]["segzoo"]


def _mem(row: dict, side: str) -> str:
    m = (row.get("memory") or {}).get(side)
    if not m:
        return "-"
    if "error" in m:
        return "error"
    inf = m.get("inference_rss_mib")
    return f"{m['peak_rss_mib']:.0f}" + (f" (+{inf:.0f})" if inf is not None else "")


def _check(row: dict) -> str:
    if row["case"] == "auto":
        n = row["masks"]
        return f"masks {n['reference']}/{n['segzoo']} " + ("identical" if row["masks_identical"] else "DIFFER")
    if row["case"] == "predictor":
        return "outputs identical" if row["outputs_identical"] else \
            f"masks {'equal' if row['masks_equal'] else 'DIFFER'}, max logit diff {row['max_logit_diff']:.1e}"
    return f"label agreement {100 * row['label_agreement']:.3f}%"


HEADER = f"{'case':<12} {'setting':<38} {'unit':<14} {'reference':>9} {'segzoo':>9} {'ratio':>6}  " \
         f"{'peak MiB ref':>14} {'peak MiB segzoo':>15}  check"


def print_row(row: dict) -> None:
    t = row["times_s"]
    print(f"{row['case']:<12} {row['setting']:<38} {row['unit']:<14} {t['reference']:>9.3f} {t['segzoo']:>9.3f} "
          f"{_ratio(row):>5.2f}x  {_mem(row, 'reference'):>14} {_mem(row, 'segzoo'):>15}  {_check(row)}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--runs", type=int, default=3, help="timed runs per side (predictor, mask2former)")
    p.add_argument("--auto-runs", type=int, default=1, help="timed runs per side of the automatic generator")
    p.add_argument("--settings", nargs="+", choices=list(AUTO_SETTINGS), default=["default", "relaxed"],
                   help="automatic generator settings (all: every mask of every prompt, for the identity check)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=SIZE)
    p.add_argument("--points-per-side", type=int, default=32)
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory children")
    p.add_argument("--auto-memory", action="store_true",
                   help="peak-memory children for the automatic generator too (one more run per side and setting)")
    p.add_argument("--quick", action="store_true", help="8 x 8 points, 1 run, no memory")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))
    if args.quick:
        args.points_per_side, args.runs, args.auto_runs, args.memory = 8, 1, 1, False
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}; "
          f"peak MiB: whole child process (+ the run's own rise)")
    print(HEADER)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if {"auto", "predictor"} & set(args.cases):
            rows += case_sam(args, tmp, args.cases)
        if "mask2former" in args.cases:
            rows += case_m2f(args, tmp)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
