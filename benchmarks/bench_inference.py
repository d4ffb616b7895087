"""segzoo's inference against SSSegmentation 1.7.0's own, for every (architecture, backbone family).

The pairs come from the registry at run time: every ``(architecture, backbone family)`` of the
records whose ``source`` is an SSSegmentation config (backbone family = the backbone name up to
its first digit or underscore: ``resnet50_os8`` -> ``resnet``, ``swin_base`` -> ``swin``,
``mit_b1`` -> ``mit``). Per pair one light record is benchmarked (see ``choose_record``):

1. the lightest backbone variant: smallest depth / size word / MiT index (``resnet50`` before
   ``resnet101``, ``tiny`` < ``small`` < ``base`` < ``large`` < ``xlarge``, ``b0`` < ``b1``),
   then the larger output stride (``os16`` before ``os8``), then the plain variant (no extra tag
   such as ``in22k``);
2. then a Cityscapes record (its 1024x2048 images make the slide case a real many-window run);
3. then the name, alphabetically.

For that record, two rows, ``whole`` and ``slide``, each with the record's own protocol: the
network input is a random normalised image of the dataset's typical size (Cityscapes 1024x2048,
the others 375x500) after the record's test-time resize (``segzoo.inference.resized_shape``);
the slide windows are the record's ``inference`` crop and stride (a whole-mode record: its
``crop_size`` and a stride of 2/3 of it, as ``segzoo.inference.resolve_config`` derives them).

Same network, same weights, same input: ssseg builds the reference from the record's config
(random weights and BatchNorm statistics, ``tests/_ssseg.py``); its checkpoint loads strictly into
segzoo via ``create_model(name, checkpoint=...)``. Timed is the network part only:

* ssseg:  ``segmentor.inference(x)`` with ``cfg["inference"]["forward"]`` set to the case
* segzoo: ``segzoo.inference.whole_inference`` / ``slide_inference`` with default arguments

Time: in this process, one warm-up per side, then the sides alternate run by run; median of
``--runs``. Peak memory: one child process per (row, side) that imports the same modules (torch,
segzoo, ssseg), builds only its own side's network (the segzoo child loads the checkpoint this
process saved), runs one warm-up and one inference, and reports (a) its peak RSS (``ru_maxrss``,
building included) and (b) the peak RSS of the two runs minus the RSS just before them (on Linux
the peak mark is reset there, so that a loading peak does not hide the inference's own; elsewhere
(b) is the whole-process peak minus that RSS). The memory ratio uses (a).

    python benchmarks/bench_inference.py                          # all pairs, full size
    python benchmarks/bench_inference.py --quick                  # smoke run, 1/8 size, 1 run
    python benchmarks/bench_inference.py --pairs fcn:resnet segformer:mit --runs 5 --json out.json
    python benchmarks/bench_inference.py --list                   # the chosen records only
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

# The same imports in the parent and in every memory child, whichever side the child builds, so
# that both sides start from the same baseline. segzoo.hub / .models / .convert are what
# create_model imports lazily (timm, huggingface_hub, safetensors, ...); ssseg's builder is what
# build_ssseg imports.
import torch  # noqa: E402

import segzoo  # noqa: E402
import segzoo.convert  # noqa: E402,F401
import segzoo.hub  # noqa: E402,F401
import segzoo.models  # noqa: E402,F401
from segzoo.inference import resized_shape, slide_inference, whole_inference  # noqa: E402
from ssseg.modules.models.segmentors.builder import BuildSegmentor  # noqa: E402,F401
from ssseg.modules.utils import SSSegInputStructure  # noqa: E402,F401

from _ssseg import build_ssseg  # noqa: E402  (tests/_ssseg.py: the reference builder the parity tests use)

# Typical image size (h, w) of a dataset before the test-time resize.
IMAGE_SIZE = {"cityscapes": (1024, 2048)}
DEFAULT_IMAGE_SIZE = (375, 500)
SIZE_WORDS = {"nano": 0, "tiny": 1, "small": 2, "base": 3, "medium": 3, "large": 4, "xlarge": 5, "huge": 6}
MODES = ("whole", "slide")
SIDES = ("ssseg", "segzoo")
QUICK_SCALE = 0.125
CHILD_TAG = "BENCH_CHILD_RESULT "


# ---- choosing the records -------------------------------------------------------------------------
def backbone_family(backbone: str) -> str:
    """The backbone name up to its first digit or underscore."""
    return re.match(r"[^\d_]*", backbone).group(0)


def backbone_weight(backbone: str) -> tuple:
    """Sort key of a backbone variant within its family, lightest first: (size, -output stride,
    number of extra tags). Size: the depth (resnet50), the MiT index (mit_b0) or the size word
    (swin_tiny); unknown sizes sort last."""
    tokens = [t for t in backbone[len(backbone_family(backbone)):].split("_") if t]
    size, stride, extra = None, 0, 0
    for tok in tokens:
        m_num, m_os = re.fullmatch(r"b?(\d+)", tok), re.fullmatch(r"os(\d+)", tok)
        if m_os:
            stride = -int(m_os.group(1))
        elif size is None and m_num:
            size = int(m_num.group(1))
        elif size is None and tok in SIZE_WORDS:
            size = SIZE_WORDS[tok]
        else:
            extra += 1
    return (float("inf") if size is None else size, stride, extra)


def ssseg_records() -> dict:
    """{(architecture, backbone family): [model_info, ...]} of the records with an SSSegmentation config."""
    pairs: dict = {}
    for name in segzoo.list_models():
        info = segzoo.model_info(name)
        source = info.get("source") or {}
        if source.get("project") != "sssegmentation" or not source.get("config"):
            continue
        key = (info["architecture"], backbone_family(info["backbone"]))
        pairs.setdefault(key, []).append(info)
    return pairs


def choose_record(infos: list) -> dict:
    """The benchmarked record of one pair: lightest backbone variant, then Cityscapes, then name."""
    return min(infos, key=lambda i: (backbone_weight(i["backbone"]), i["dataset"] != "cityscapes", i["name"]))


def _scaled(pair, scale: float, minimum: int) -> tuple:
    return tuple(max(minimum, int(round(v * scale))) for v in pair)


def plan_record(info: dict, scale: float) -> dict:
    """Input size and slide windows of a record, following its own test protocol."""
    inf = info.get("inference") or {}
    image = IMAGE_SIZE.get(info["dataset"], DEFAULT_IMAGE_SIZE)
    resize = inf.get("resize")
    size = resized_shape(*image, resize["size"], resize.get("keep_ratio", True)) if resize else tuple(image)
    crop = tuple(inf.get("crop_size") or info["crop_size"])
    stride = tuple(inf.get("stride") or (max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3)))
    if scale != 1.0:
        size, crop, stride = _scaled(size, scale, 32), _scaled(crop, scale, 16), _scaled(stride, scale, 1)
    rows, cols = (_num_windows(s, c, t) for s, c, t in zip(size, crop, stride))
    return {"name": info["name"], "config": info["source"]["config"], "architecture": info["architecture"],
            "backbone": info["backbone"], "dataset": info["dataset"], "num_classes": info["num_classes"],
            "protocol": inf.get("mode") or "whole", "image": list(image), "input": list(size),
            "crop": list(crop), "stride": list(stride), "windows": rows * cols}


def _num_windows(size: int, crop: int, stride: int) -> int:
    return max(size - crop + stride - 1, 0) // stride + 1


# ---- running one side -----------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_input(plan: dict, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, *plan["input"], generator=g).to(device)


def ssseg_runner(ref, plan: dict, mode: str):
    """``ref.inference(x)`` with the case's forward config, under no_grad as ssseg's test.py runs it."""
    cfg = copy.deepcopy(ref.cfg["inference"])
    cfg["tta"]["use_probs_before_resize"] = False  # segzoo's defaults return logits too
    if mode == "whole":
        cfg["forward"] = {"mode": "whole", "cropsize": None, "stride": None}
    else:
        cfg["forward"] = {"mode": "slide", "cropsize": list(plan["crop"]), "stride": list(plan["stride"])}

    def run(x):
        ref.cfg["inference"] = cfg  # set per call: the whole and slide runners share one network
        with torch.no_grad():
            return ref.inference(x)
    return run


def segzoo_runner(model, plan: dict, mode: str):
    if mode == "whole":
        return lambda x: whole_inference(model, x)
    return lambda x: slide_inference(model, x, tuple(plan["crop"]), tuple(plan["stride"]))


def bench(fns: dict, runs: int, device: torch.device) -> tuple:
    """One warm-up per function, then they alternate (order flipped every round) so that
    background load hits both sides alike. Returns (median s, warm-up outputs, all times)."""
    times = {k: [] for k in fns}
    outs = {}
    for k, fn in fns.items():
        outs[k] = fn()
        _sync(device)
    keys = list(fns)
    for r in range(runs):
        for k in (keys if r % 2 == 0 else keys[::-1]):
            _sync(device)
            t0 = time.perf_counter()
            fns[k]()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, outs, times


# ---- memory: one child process per (row, side) ---------------------------------------------------
def _rss_now_mib() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _hwm_mib() -> float | None:
    """VmHWM (Linux): the peak RSS of this process's current address space, a cross-check of ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux >= 4.0: ``5`` to /proc/self/clear_refs), so that a
    later ru_maxrss is the peak since now. False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_peak_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def child_main(spec: dict) -> int:
    """Build one side's network, one warm-up and one inference; print peak RSS as JSON."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    plan, mode = spec["plan"], spec["mode"]
    if spec["side"] == "ssseg":
        net, _ = build_ssseg(plan["config"])
        run = ssseg_runner(net.to(device).eval(), plan, mode)
    else:
        net = segzoo.create_model(plan["name"], checkpoint=spec["checkpoint"]).to(device).eval()
        run = segzoo_runner(net, plan, mode)
    x = make_input(plan, device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    build_peak = _rss_peak_mib()  # building can peak above what inference later reaches (a checkpoint
    before = _rss_now_mib()       # copy beside the network): keep it, then measure inference on its own
    reset = before is not None and _reset_peak_rss()
    t0 = time.perf_counter()
    run(x)  # warm-up
    _sync(device)
    t1 = time.perf_counter()
    run(x)
    _sync(device)
    t2 = time.perf_counter()
    run_peak = _rss_peak_mib()
    result = {"peak_rss_mib": max(build_peak, run_peak), "build_peak_rss_mib": build_peak,
              "inference_peak_rss_mib": run_peak if reset else None, "rss_before_mib": before,
              "inference_rss_mib": None if before is None else run_peak - before, "peak_was_reset": reset,
              "vm_hwm_mib": _hwm_mib(), "warmup_s": t1 - t0, "run_s": t2 - t1}
    if device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(CHILD_TAG + json.dumps(result), flush=True)
    return 0


def measure_memory(plan: dict, mode: str, side: str, checkpoint: str, args) -> dict:
    spec = {"plan": plan, "mode": mode, "side": side, "checkpoint": checkpoint, "threads": args.threads,
            "device": args.device}
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    if os.name == "posix" and os.path.exists("/bin/sh"):
        # ru_maxrss survives execve: a child exec'd straight from this process would report at least
        # this process's RSS at the fork. A small shell that forks the child (no exec shortcut: a
        # command follows) gives it a fresh count.
        cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_TAG):
            return json.loads(line[len(CHILD_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    print(f"    memory child {side}/{mode} failed (exit {proc.returncode}): " + " | ".join(tail), flush=True)
    return {"error": f"exit {proc.returncode}: {tail[-1] if tail else ''}"}


# ---- one record: timing in this process, memory in children ---------------------------------------
def _fmt_s(t: float) -> str:
    return f"{t:.2f}" if t >= 1 else f"{t:.3f}"


def bench_record(plan: dict, args, device: torch.device) -> list:
    rows = []
    with tempfile.TemporaryDirectory(prefix="segzoo-bench-") as tmp:
        checkpoint = os.path.join(tmp, "ref.pth")
        ref, _ = build_ssseg(plan["config"])
        torch.save({"model": ref.state_dict()}, checkpoint)
        model = segzoo.create_model(plan["name"], checkpoint=checkpoint)
        ref.to(device).eval()
        model.to(device).eval()
        x = make_input(plan, device)
        h, w = plan["input"]
        for mode in MODES:
            fns = {"ssseg": lambda f=ssseg_runner(ref, plan, mode): f(x),
                   "segzoo": lambda f=segzoo_runner(model, plan, mode): f(x)}
            med, outs, raw = bench(fns, args.runs, device)
            a, b = outs["segzoo"].float().cpu(), outs["ssseg"].float().cpu()
            if a.shape == b.shape:
                diff = float((a - b).abs().max())
                rel = diff / max(float(b.abs().max()), 1e-12)
            else:
                print(f"    output shapes differ: segzoo {tuple(a.shape)}, ssseg {tuple(b.shape)}", flush=True)
                diff = rel = None
            windows = 1 if mode == "whole" else plan["windows"]
            row = {**plan, "mode": mode, "windows": windows, "input": [h, w],
                   "ssseg_s": med["ssseg"], "segzoo_s": med["segzoo"], "speedup": med["ssseg"] / med["segzoo"],
                   "ssseg_runs_s": raw["ssseg"], "segzoo_runs_s": raw["segzoo"],
                   "max_abs_diff": diff, "max_rel_diff": rel, "output_shape": list(b.shape)}
            rows.append(row)
            detail = "" if mode == "whole" else (f", {windows} windows {plan['crop'][0]}x{plan['crop'][1]} "
                                                 f"stride {plan['stride'][0]}x{plan['stride'][1]}")
            print(f"  {mode} {h}x{w}{detail}: ssseg {[_fmt_s(t) for t in raw['ssseg']]} s, "
                  f"segzoo {[_fmt_s(t) for t in raw['segzoo']]} s -> {row['speedup']:.2f}x, "
                  f"max abs diff {_fmt_diff(diff, rel)}", flush=True)
        del ref, model, x, outs, fns, a, b
        gc.collect()
        if not args.no_memory:
            jobs = [(row, side) for row in rows for side in SIDES]
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                results = list(pool.map(lambda job: measure_memory(plan, job[0]["mode"], job[1], checkpoint, args),
                                        jobs))
            for (row, side), mem in zip(jobs, results):
                row[f"{side}_memory"] = mem
            for row in rows:
                row["memory_ratio"] = _ratio(row)
                print(f"  {row['mode']} memory: " + ", ".join(
                    f"{side} {_fmt_mem(row[f'{side}_memory'])} MiB" for side in SIDES)
                    + f" -> segzoo/ssseg {_fmt_ratio(row['memory_ratio'])}", flush=True)
    return rows


def _ratio(row: dict) -> float | None:
    a, b = row["segzoo_memory"].get("peak_rss_mib"), row["ssseg_memory"].get("peak_rss_mib")
    return a / b if a and b else None


def _fmt_mem(mem: dict | None) -> str:
    if not mem:
        return "-"
    if "error" in mem:
        return "failed"
    extra = mem.get("inference_rss_mib")
    return f"{mem['peak_rss_mib']:.0f}" + ("" if extra is None else f" (+{extra:.0f})")


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


def _fmt_diff(diff: float | None, rel: float | None) -> str:
    if diff is None:
        return "shape mismatch"
    return f"{diff:.1e} ({rel:.1e})" if diff else "0 (0)"


def print_table(rows: list) -> None:
    print("| record | mode | input | windows | ssseg (s) | segzoo (s) | speed-up | ssseg peak MiB | "
          "segzoo peak MiB | memory segzoo/ssseg | max abs diff (rel) |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        windows = "1" if r["mode"] == "whole" else (f"{r['windows']} x {r['crop'][0]}x{r['crop'][1]}, "
                                                    f"stride {r['stride'][0]}x{r['stride'][1]}")
        print(f"| {r['name']} | {r['mode']} | {r['input'][0]}x{r['input'][1]} | {windows} | {_fmt_s(r['ssseg_s'])} | "
              f"{_fmt_s(r['segzoo_s'])} | {r['speedup']:.2f}x | {_fmt_mem(r.get('ssseg_memory'))} | "
              f"{_fmt_mem(r.get('segzoo_memory'))} | {_fmt_ratio(r.get('memory_ratio'))} | "
              f"{_fmt_diff(r['max_abs_diff'], r['max_rel_diff'])} |")


# ---- command line ---------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    p.add_argument("--pairs", nargs="+", metavar="ARCH:FAMILY",
                   help="restrict to these (architecture, backbone family) pairs, e.g. fcn:resnet segformer:mit")
    p.add_argument("--runs", type=int, default=None, help="timed runs per side and row (default 3; 1 with --quick)")
    p.add_argument("--scale", type=float, default=None,
                   help=f"scale input, crop and stride by this factor (default 1; {QUICK_SCALE} with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: small inputs and windows, 1 run")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads, here and in the memory children")
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=None,
                   help="memory child processes run at once (default 1; 2 with --quick); their timings are not used")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--list", action="store_true", help="print the chosen record of each pair and exit")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        return child_main(json.loads(args.child))
    args.runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    args.scale = args.scale if args.scale is not None else (QUICK_SCALE if args.quick else 1.0)
    args.jobs = args.jobs if args.jobs is not None else (2 if args.quick else 1)
    if args.runs < 1 or args.scale <= 0 or args.jobs < 1:
        p.error("--runs and --jobs must be >= 1, --scale > 0")

    pairs = ssseg_records()
    keys = sorted(pairs)
    if args.pairs:
        wanted = []
        for spec in args.pairs:
            key = tuple(spec.lower().split(":", 1)) if ":" in spec else None
            if key not in pairs:
                p.error(f"unknown pair {spec!r}; pairs with an SSSegmentation config: "
                        + " ".join(f"{a}:{b}" for a, b in keys))
            wanted.append(key)
        keys = list(dict.fromkeys(wanted))
    plans = [plan_record(choose_record(pairs[k]), args.scale) for k in keys]

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = f"{device}" if device.type != "cpu" else f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    print(f"{len(plans)} pairs; device {where}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {args.runs} runs; scale {args.scale:g}; random weights", flush=True)
    for k, plan in zip(keys, plans):
        print(f"  {k[0]}:{k[1]} -> {plan['name']} (config {plan['config']}, {plan['dataset']}, "
              f"{plan['protocol']} protocol, image {plan['image'][0]}x{plan['image'][1]} -> input "
              f"{plan['input'][0]}x{plan['input'][1]}, slide {plan['windows']} windows {plan['crop'][0]}x{plan['crop'][1]} "
              f"stride {plan['stride'][0]}x{plan['stride'][1]})")
    if args.list:
        return 0

    rows, t_start = [], time.perf_counter()
    for i, (k, plan) in enumerate(zip(keys, plans), 1):
        t0 = time.perf_counter()
        print(f"[{i}/{len(plans)}] {k[0]}:{k[1]} {plan['name']}", flush=True)
        rows += bench_record(plan, args, device)
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s. Memory: peak RSS of a process that builds one side and "
          "runs it twice (in brackets: the peak during the two runs minus the RSS before them); the ratio uses "
          "the peak.\n")
    print_table(rows)
    if args.json:
        meta = {"device": where, "torch": torch.__version__, "threads": torch.get_num_threads(), "runs": args.runs,
                "scale": args.scale}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
