"""``fit`` and ``evaluate``: the training and evaluation loops behind ``model.fit`` / ``model.evaluate``.

One code path for a notebook on the CPU and ``torchrun --nproc-per-node N`` on GPUs: under
torchrun (``WORLD_SIZE`` > 1) the process group is initialised here, the model is wrapped in
``DistributedDataParallel`` (with SyncBatchNorm on GPUs where the recipe asks for it), each process
takes its share of every global batch, metrics are summed across processes and only rank 0 writes.

Reproducible and resumable: the order of the images and every random transform are drawn from
generators seeded by (recipe seed, epoch, position), never from the global RNG, and a checkpoint
holds the model, optimizer, gradient scaler, RNG states and the iteration, so a run stopped at
iteration k and resumed reaches iteration n with the weights of an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from ..data.transforms import build_pipeline
from .losses import SegmentationCriterion
from .metrics import SegmentationMetrics
from .optim import LRSchedule, build_optimizer
from .recipe import Recipe

__all__ = ["fit", "evaluate", "FitResult", "distributed_context"]

STATE_FILE = "training_state.pt"


# ---- processes ---------------------------------------------------------------------------------
class _Context:
    """This process's place in a torchrun job (rank 0 of 1 outside one)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend=backend)
        if dist.is_initialized():
            self.world, self.rank = dist.get_world_size(), dist.get_rank()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, model: nn.Module, device=None) -> torch.device:
        if device is not None:
            return torch.device(device)
        if self.world > 1 and torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        p = next(model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def barrier(self) -> None:
        if dist.is_initialized() and self.world > 1:
            dist.barrier()


def distributed_context() -> _Context:
    """The current process's rank and world size (initialising torchrun's process group)."""
    return _Context()


# ---- data ----------------------------------------------------------------------------------------
def _as_sample(item) -> dict:
    """A dataset item as ``{"image", "mask"}``: a mapping with those keys or an (image, mask) pair;
    PIL images become arrays."""
    if isinstance(item, Mapping):
        sample = dict(item)
    elif isinstance(item, (tuple, list)) and len(item) >= 2:
        sample = {"image": item[0], "mask": item[1]}
    else:
        raise TypeError(f"a training item is a dict with 'image' and 'mask' or an (image, mask) pair, "
                        f"got {type(item).__name__}")
    for key in ("image", "mask"):
        if key not in sample or sample[key] is None:
            raise ValueError(f"a training item has no {key!r}")
        if not isinstance(sample[key], (np.ndarray, torch.Tensor)):
            sample[key] = np.asarray(sample[key])
    return sample


def _seed(*parts: int) -> int:
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


class _TrainItems(torch.utils.data.Dataset):
    """``dataset[(index, epoch)]`` through the pipeline, its randomness seeded by (seed, epoch, index)."""

    def __init__(self, dataset, pipeline, seed: int):
        self.dataset, self.pipeline, self.seed = dataset, pipeline, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, epoch = key
        sample = _as_sample(self.dataset[index])
        if self.pipeline is not None:
            g = torch.Generator().manual_seed(_seed(self.seed, epoch, index))
            sample = self.pipeline(sample, generator=g)
        image, mask = sample["image"], sample["mask"]
        image = torch.as_tensor(image)
        if image.dtype == torch.uint8:
            raise ValueError("the training pipeline must end with Normalize/ToTensor (got uint8 images)")
        return image.float(), torch.as_tensor(mask).long()


class _Batches(torch.utils.data.Sampler):
    """(index, epoch) keys of this process's share of each global batch of ``epoch``: a permutation
    drawn from (seed, epoch), cut into global batches (the last partial one dropped), each split
    into ``world`` equal parts; the first ``skip`` batches left out (resume)."""

    def __init__(self, n: int, global_batch: int, world: int, rank: int, seed: int, epoch: int, skip: int = 0):
        self.n, self.gb, self.world, self.rank = n, global_batch, world, rank
        self.seed, self.epoch, self.skip = seed, epoch, skip
        self.per_rank = global_batch // world

    def __iter__(self):
        g = torch.Generator().manual_seed(_seed(self.seed, self.epoch))
        perm = torch.randperm(self.n, generator=g).tolist()
        for b in range(self.skip, self.n // self.gb):
            batch = perm[b * self.gb:(b + 1) * self.gb]
            for i in batch[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]:
                yield (i, self.epoch)

    def __len__(self):
        return max(0, self.n // self.gb - self.skip) * self.per_rank


# ---- model modes -------------------------------------------------------------------------------------
def _set_train(model: nn.Module, recipe: Recipe) -> None:
    model.train()
    if recipe.freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    if recipe.freeze_backbone and hasattr(model, "backbone"):
        model.backbone.eval()


def _freeze_params(model: nn.Module, recipe: Recipe) -> None:
    if recipe.freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for p in m.parameters():
                    p.requires_grad_(False)
    if recipe.freeze_backbone and hasattr(model, "backbone"):
        model.backbone.requires_grad_(False)


def _amp(recipe: Recipe, device: torch.device):
    if recipe.amp is None:
        return nullcontext(), None
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[recipe.amp]
    scaler = torch.amp.GradScaler(device.type) if recipe.amp == "fp16" else None
    return torch.autocast(device_type=device.type, dtype=dtype), scaler


# ---- checkpoints -------------------------------------------------------------------------------------
def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_checkpoint(folder: Path, model: nn.Module, state: dict | None) -> None:
    """Write ``folder`` (``save_pretrained``'s files, plus the training state) so that at any moment
    ``folder`` is either the previous complete checkpoint or the new complete one (``folder.old``
    holds the previous one for the instant between the two renames)."""
    from ..hub import save_pretrained
    tmp = folder.with_name(folder.name + ".tmp")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(model, tmp)
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _find_checkpoint(path) -> Path:
    path = Path(path)
    for cand in (path, path / "last", path.with_name(path.name + ".old"), path / "last.old"):
        if (cand / STATE_FILE).is_file():
            return cand
    raise FileNotFoundError(f"{path}: no training checkpoint ({STATE_FILE} in it or in its 'last' folder); "
                            "fit(..., out=DIR) writes DIR/last")


class FitResult(dict):
    """What ``fit`` returns: ``history`` (one dict per logged iteration / validation), ``best``
    (the best validation metrics), ``skipped`` (non-finite losses not trained on), ``out``."""


# ---- fit -------------------------------------------------------------------------------------------
def fit(model: nn.Module, train, val=None, *, recipe: Recipe | None = None, out=None, resume=None,
        steps: int | None = None, progress: bool = True, device=None, **overrides) -> FitResult:
    """Train ``model`` on ``train`` (a segzoo dataset or any dataset of (image, mask) /
    ``{"image", "mask"}`` items: uint8 HxWx3 images, HxW label maps with 255 for unlabelled pixels)
    with ``recipe`` (default: the model's own) changed by ``overrides`` (recipe field names).

    Validates on ``val`` every ``eval_interval`` iterations and at the end (``evaluate`` with the
    model's test protocol), writes ``out/last`` (and ``out/best`` by validation mIoU) every
    ``save_interval`` iterations and at the end, in ``save_pretrained``'s layout plus the training
    state, and ``out/history.jsonl``. ``resume``: a checkpoint folder (or ``out`` itself) to continue
    from, exactly where it stopped. ``steps``: run at most this many iterations in this call, then
    write ``out/last`` and return (a later call with ``resume=out`` goes on)."""
    ctx = _Context()
    recipe = (recipe or Recipe.from_record(getattr(model, "record", None))).replace(**overrides)
    if len(train) == 0:
        raise ValueError("the training set is empty")
    num_classes = getattr(train, "num_classes", None)
    if num_classes is not None and hasattr(model, "num_classes") and int(num_classes) > model.num_classes:
        raise ValueError(f"the training set has {num_classes} classes, the model {model.num_classes}: create the "
                         f"model with num_classes={num_classes} to fine-tune it on this data")
    if recipe.batch_size % ctx.world:
        raise ValueError(f"batch_size {recipe.batch_size} does not split over {ctx.world} processes")
    dev = ctx.device(model, device)
    model.to(dev)
    torch.manual_seed(_seed(recipe.seed, ctx.rank))
    _freeze_params(model, recipe)

    net = model
    if ctx.world > 1:
        if recipe.sync_bn and dev.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                  find_unused_parameters=True)

    iters_per_epoch = len(train) // recipe.batch_size
    if iters_per_epoch == 0:
        raise ValueError(f"the training set ({len(train)} items) is smaller than one batch ({recipe.batch_size})")
    total = recipe.iterations or (recipe.epochs or 1) * iters_per_epoch
    criterion = SegmentationCriterion(recipe.losses, recipe.ignore_index, getattr(model, "align_corners", False))
    optimizer = build_optimizer(model, recipe.optimizer_config())
    schedule = LRSchedule(recipe.schedule_config(), recipe.lr, total, iters_per_epoch)
    autocast, scaler = _amp(recipe, dev)
    items = _TrainItems(train, build_pipeline(recipe.pipeline()) if recipe.train_pipeline else None, recipe.seed)

    result = FitResult(history=[], best=None, skipped=0, out=str(out) if out else None)
    it = 0
    if resume is not None:
        folder = _find_checkpoint(resume)
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
        from ..convert.checkpoint import load_state_dict_strict, read_state_dict
        load_state_dict_strict(model, read_state_dict(folder / "model.safetensors"), source=str(folder))
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        it = int(state["iteration"])
        result.update(history=state.get("history", []), best=state.get("best"), skipped=state.get("skipped", 0))
        _set_rng_state(state["rng"][ctx.rank] if isinstance(state["rng"], list) else state["rng"])
    out = Path(out) if out else None
    if out is not None and ctx.main:
        out.mkdir(parents=True, exist_ok=True)

    def save(name: str) -> None:
        rngs = [None] * ctx.world
        if ctx.world > 1:
            dist.all_gather_object(rngs, _rng_state())
        else:
            rngs = [_rng_state()]
        if out is None or not ctx.main:
            return
        state = {"iteration": it, "optimizer": optimizer.state_dict(),
                 "scaler": scaler.state_dict() if scaler else None,
                 "rng": rngs, "history": result["history"], "best": result["best"], "skipped": result["skipped"],
                 "recipe": recipe.to_dict()}
        _write_checkpoint(out / name, model, state if name == "last" else None)

    def log(entry: dict) -> None:
        result["history"].append(entry)
        if out is not None and ctx.main:
            with open(out / "history.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")

    stop = total if steps is None else min(total, it + int(steps))
    bar = _progress(total, it, progress and ctx.main, "fit")
    running: dict[str, float] = {}
    count = 0
    _set_train(net, recipe)
    while it < stop:
        epoch, skip = divmod(it, iters_per_epoch)
        sampler = _Batches(len(train), recipe.batch_size, ctx.world, ctx.rank, recipe.seed, epoch, skip)
        loader = torch.utils.data.DataLoader(
            items, batch_size=recipe.batch_size // ctx.world, sampler=sampler, num_workers=recipe.num_workers,
            drop_last=True, pin_memory=dev.type == "cuda", generator=torch.Generator().manual_seed(recipe.seed),
            persistent_workers=False)
        for images, labels in loader:
            if it >= stop:
                break
            images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            lr = schedule.apply(optimizer, it)
            optimizer.zero_grad(set_to_none=True)
            buffers = [b.detach().clone() for b in model.buffers()]  # a skipped step must not move BN statistics
            with autocast:
                outputs = net(images)
            loss, parts = criterion(model, _float_outputs(outputs), labels)
            finite = torch.isfinite(loss.detach())
            if ctx.world > 1:  # every process skips together, or none does
                flag = finite.float().to(dev)
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                finite = flag > 0
            if not bool(finite):  # never trained on: counted, the step skipped, the buffers restored
                result["skipped"] += 1
                with torch.no_grad():
                    for b, saved in zip(model.buffers(), buffers):
                        b.copy_(saved)
            else:
                _backward_and_step(loss, optimizer, scaler, recipe)
                for k, v in {"loss": float(loss.detach()), **parts}.items():
                    running[k] = running.get(k, 0.0) + v
                count += 1
            it += 1
            bar.update(1)
            if count and (it % recipe.log_interval == 0 or it == total):
                entry = {"iteration": it, "epoch": epoch, "lr": lr, **{k: v / count for k, v in running.items()}}
                if ctx.world > 1:
                    entry = _mean_across(entry, dev)
                log(entry)
                bar.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{lr:.2e}")
                running, count = {}, 0
            last = it == total
            if val is not None and ((recipe.eval_interval and it % recipe.eval_interval == 0) or last):
                metrics = evaluate(model, val, progress=False, device=dev)
                log({"iteration": it, "val": {k: v for k, v in metrics.items() if not isinstance(v, dict)}})
                if result["best"] is None or metrics["mIoU"] > result["best"]["mIoU"]:
                    result["best"] = {"iteration": it, **{k: v for k, v in metrics.items() if not isinstance(v, dict)}}
                    save("best")
                _set_train(net, recipe)
            if (recipe.save_interval and it % recipe.save_interval == 0) or last or it == stop:
                save("last")
    bar.close()
    if result["skipped"] and ctx.main:
        import warnings
        warnings.warn(f"{result['skipped']} iteration(s) had a non-finite loss and were skipped", stacklevel=2)
    model.eval()
    ctx.barrier()
    return result


def _backward_and_step(loss, optimizer, scaler, recipe: Recipe) -> None:
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if recipe.clip_grad:  # per parameter group, as the reference clips
        for group in optimizer.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                nn.utils.clip_grad_norm_(params, max_norm=recipe.clip_grad.get("max_norm", 35),
                                         norm_type=recipe.clip_grad.get("norm_type", 2))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def _float_outputs(outputs):
    """Train outputs in float32 (autocast leaves them in half precision; the losses run in float32)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, Mapping):
        return {k: _float_outputs(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(_float_outputs(v) for v in outputs)
    return outputs


def _mean_across(entry: dict, dev) -> dict:
    keys = [k for k, v in entry.items() if isinstance(v, float) and k != "lr"]
    t = torch.tensor([entry[k] for k in keys], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return {**entry, **{k: float(v) for k, v in zip(keys, t.tolist())}}


def _progress(total: int, start: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=start, disable=not enabled, desc=desc, dynamic_ncols=True)


# ---- evaluate ----------------------------------------------------------------------------------------
def evaluate(model: nn.Module, dataset, *, mode: str | None = None, crop_size=None, stride=None, scales=None,
             flip: bool | None = None, resize=None, progress: bool = True, device=None) -> dict:
    """mIoU, mAcc, aAcc, mDice (percent) and per-class IoU/Acc of ``model`` on ``dataset`` (items as
    for ``fit``, raw images), predicting each image with ``model.predict`` and the record's test
    protocol unless overridden (``mode``, ``crop_size``, ``stride``, ``scales``, ``flip``,
    ``resize``). Under torchrun the images are split across the processes and the confusion matrix
    summed."""
    ctx = _Context()
    num_classes = model.num_classes
    names = getattr(dataset, "class_names", None) or getattr(getattr(model, "record", None), "class_names", None)
    metrics = SegmentationMetrics(num_classes, names if names and len(names) == num_classes else None)
    was_training = model.training
    model.eval()
    if device is not None:
        model.to(device)
    indices = range(ctx.rank, len(dataset), ctx.world)
    bar = _progress(len(indices), 0, progress and ctx.main, "evaluate")
    for i in indices:
        sample = _as_sample(dataset[i])
        image = sample["image"]
        if isinstance(image, torch.Tensor):
            image = image.permute(1, 2, 0).numpy() if image.ndim == 3 and image.shape[0] == 3 else image.numpy()
        pred = model.predict(image, mode=mode, crop_size=crop_size, stride=stride, scales=scales, flip=flip,
                             resize=resize)
        metrics.update(pred, sample["mask"])
        bar.update(1)
    bar.close()
    metrics.all_reduce()
    model.train(was_training)
    return metrics.compute()
