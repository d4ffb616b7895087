"""segzoo's inference against SSSegmentation 1.7.0's own ``BaseSegmentor.inference``.

Same network, same weights, same normalised input tensor, same process: the reference segmentor
is built by ssseg from the record's config (random weights and BatchNorm statistics), its
checkpoint is loaded strictly into segzoo via ``create_model(name, checkpoint=...)``, and each side
runs its whole / slide inference on the tensor:

* ssseg:  ``segmentor.inference(x)`` with ``cfg["inference"]["forward"]`` set to the case
* segzoo: ``segzoo.inference.whole_inference`` / ``slide_inference`` (what ``predict`` calls)

Timed: the network part only (no image decoding, test-time resize or final resize to the
original size). Runs alternate between the two sides; the table reports the median of ``--runs``
timed runs after one warm-up each, the speed-up (ssseg time / segzoo time) and the largest
absolute difference between the two outputs.

    python benchmarks/bench_inference.py                      # ~5 min on 2 CPU cores
    python benchmarks/bench_inference.py --runs 5 --threads 2 --device cuda
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import segzoo  # noqa: E402
from segzoo.inference import default_batch_size, slide_inference, whole_inference, window_grid  # noqa: E402
from segzoo.zoo.sssegmentation import segzoo_name  # noqa: E402
from _ssseg import build_ssseg  # noqa: E402  (tests/_ssseg.py: the reference builder the parity tests use)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bench(fns: dict, runs: int, device: torch.device) -> dict:
    """Median seconds per function; one warm-up each, then the functions alternate (order flips
    every round) so that background load hits both sides alike."""
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="fcn_resnet50os16_cityscapes", help="SSSegmentation config name")
    p.add_argument("--runs", type=int, default=3, help="timed slide runs per side")
    p.add_argument("--whole-runs", type=int, default=7, help="timed whole runs per side")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--whole-size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    p.add_argument("--slide-size", type=int, nargs=2, default=[1024, 2048], metavar=("H", "W"))
    p.add_argument("--crop", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    p.add_argument("--stride", type=int, nargs=2, default=[341, 341], metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, default=None,
                   help="segzoo's windows per forward pass (default: segzoo's, 1 on CPU, 4 on GPU)")
    p.add_argument("--cases", nargs="+", default=["whole", "slide", "slide-eager"],
                   choices=["whole", "slide", "slide-eager"],
                   help="slide: segzoo's default (frozen fast path on the CPU); slide-eager: optimize=False")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    ref, _ = build_ssseg(args.config)
    name = segzoo_name(args.config)[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ref.pth")
        torch.save({"model": ref.state_dict()}, path)
        model = segzoo.create_model(name, checkpoint=path)
    ref.to(device).eval()
    model.to(device).eval()
    base_cfg = copy.deepcopy(ref.cfg["inference"])
    base_cfg["tta"]["use_probs_before_resize"] = False

    where = f"{device}" if device.type != "cpu" else f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    print(f"model: {name} (ssseg config {args.config}), random weights; device {where}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.runs} runs ({args.whole_runs} for whole)")
    rows = []
    g = torch.Generator().manual_seed(0)
    for case in args.cases:
        cfg = copy.deepcopy(base_cfg)
        if case == "whole":
            h, w = args.whole_size
            cfg["forward"] = {"mode": "whole", "cropsize": None, "stride": None}
            ours = lambda x: whole_inference(model, x)  # noqa: E731
            detail = "one forward pass"
        else:
            h, w = args.slide_size
            cfg["forward"] = {"mode": "slide", "cropsize": list(args.crop), "stride": list(args.stride)}
            optimize = False if case == "slide-eager" else None
            ours = lambda x, o=optimize: slide_inference(model, x, args.crop, args.stride,  # noqa: E731
                                                         batch_size=args.batch_size, optimize=o)
            rws, cls = window_grid(h, w, args.crop, args.stride)
            batch = args.batch_size or default_batch_size(device)
            detail = (f"{len(rws) * len(cls)} windows {args.crop[0]}x{args.crop[1]}, stride {args.stride[0]}, "
                      f"segzoo batch {batch}{', eager' if optimize is False else ''}")
        ref.cfg["inference"] = cfg
        x = torch.randn(1, 3, h, w, generator=g).to(device)

        def theirs(x=x):
            with torch.no_grad():  # as ssseg's test.py runs it
                return ref.inference(x)

        runs = args.whole_runs if case == "whole" else args.runs
        med, outs, raw = _bench({"ssseg": theirs, "segzoo": lambda x=x: ours(x)}, runs, device)
        a, b = outs["segzoo"].float(), outs["ssseg"].float()
        assert a.shape == b.shape, (a.shape, b.shape)
        diff = float((a - b).abs().max())
        rel = diff / float(b.abs().max().clamp_min(1e-12))
        classes = b.shape[1]
        rows.append((case, f"{h}x{w}", f"{detail}, {classes} classes", med["ssseg"], med["segzoo"],
                     med["ssseg"] / med["segzoo"], diff, rel))
        print(f"  {case}: ssseg runs {['%.2f' % t for t in raw['ssseg']]} s, segzoo runs "
              f"{['%.2f' % t for t in raw['segzoo']]} s", flush=True)

    print()
    print("| mode | input | setting | ssseg (s) | segzoo (s) | speed-up | max abs diff (rel) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for case, size, detail, t_ref, t_ours, speed, diff, rel in rows:
        print(f"| {case} | {size} | {detail} | {t_ref:.2f} | {t_ours:.2f} | {speed:.2f}x | {diff:.1e} ({rel:.1e}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
