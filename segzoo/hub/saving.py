"""``save_pretrained`` / ``push_to_hub`` and reading such a folder back as a record."""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Mapping

from ..cards import render_model_card
from ..registry import ModelRecord, get_record, resolve_name
from .files import _atomic_save_safetensors, _atomic_write_bytes, _hf_endpoint
from .hf import _parse_hf_spec, hub_download

_log = logging.getLogger("segzoo")


def _record_fields() -> set:
    from dataclasses import fields
    return {f.name for f in fields(ModelRecord)}


def _config_dict(model, *, name: str | None = None, class_names=None) -> dict:
    arch = dict(getattr(model, "arch", None) or {})
    if not arch:
        raise TypeError(f"save_pretrained needs a segzoo model (with .arch); got {type(model).__name__}")
    record = getattr(model, "record", None)
    cfg = record.to_dict() if record is not None else {
        "name": name or "segzoo_model", "architecture": arch.get("segmentor", ""),
        "backbone": arch.get("backbone", {}).get("type", ""), "dataset": "", "num_classes": arch["num_classes"]}
    num_classes = int(arch["num_classes"])
    if num_classes != cfg.get("num_classes"):  # a re-headed model: the source's classes and scores no longer apply
        cfg["class_names"], cfg["metrics"] = [], {}
    elif record is not None and _jsonable(dict(arch, num_classes=0)) != _jsonable(dict(record.arch, num_classes=0)):
        cfg["metrics"] = {}  # another network than the one the source scored
    if name:
        cfg["name"] = name
    if class_names is not None:
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        cfg["class_names"] = list(class_names)
    from .._version import __version__
    cfg.update(arch=arch, num_classes=num_classes, weights=[], library_name="segzoo", segzoo_version=__version__)
    return _jsonable(cfg)  # tuples -> lists, checks it is JSON


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=list))


def save_pretrained(model, save_directory, *, name: str | None = None, class_names=None, repo_id: str | None = None,
                    provenance: Mapping | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (the record, with ``arch``) + ``README.md``
    into ``save_directory``; ``create_model("local-dir:<dir>")`` or, once pushed,
    ``create_model("hf-hub:<repo>")`` builds the model back."""
    folder = Path(save_directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    cfg = _config_dict(model, name=name, class_names=class_names)
    if getattr(model, "provenance", None):
        cfg["provenance"] = _jsonable(model.provenance)
    if provenance:
        cfg["converted_from"] = dict(provenance)
    _atomic_save_safetensors(model.state_dict(), folder / "model.safetensors",
                             metadata={"format": "pt", "library": "segzoo", "name": cfg["name"]})
    _atomic_write_bytes(folder / "config.json", (json.dumps(cfg, indent=1) + "\n").encode())
    record = ModelRecord(**_record_kwargs(cfg))
    card = render_model_card(record, provenance=cfg.get("provenance"))
    if repo_id:
        card = card.replace("hf-hub:<this repo>", f"hf-hub:{repo_id}")
    _atomic_write_bytes(folder / "README.md", card.encode())
    return folder


def push_to_hub(model, repo_id: str, *, token: str | None = None, private: bool | None = None,
                revision: str | None = None, commit_message: str = "Upload segzoo model", create_pr: bool = False,
                name: str | None = None, class_names=None):
    """``save_pretrained`` into a temporary folder, then ``HfApi.create_repo`` + ``upload_folder``.
    Returns huggingface_hub's ``CommitInfo``."""
    from huggingface_hub import HfApi
    api = HfApi(endpoint=_hf_endpoint(), token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="segzoo-push-") as tmp:
        save_pretrained(model, tmp, name=name, class_names=class_names, repo_id=repo_id)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, repo_type="model", revision=revision,
                                 commit_message=commit_message, create_pr=create_pr)
    _log.info("pushed %s to %s", getattr(getattr(model, "record", None), "name", "model"), repo_id)
    return info


def _record_kwargs(cfg: Mapping) -> dict:
    kw = {k: v for k, v in cfg.items() if k in _record_fields()}
    for key in ("class_names", "crop_size"):
        if key in kw:
            kw[key] = tuple(kw[key])
    kw["weights"] = tuple(dict(w) for w in kw.get("weights", ()))
    return kw


def record_from_pretrained_dir(spec: str):
    """A :class:`ModelRecord` for ``hf-hub:org/repo[@revision]`` or ``local-dir:/path``, read from the
    folder's ``config.json`` (as written by :func:`save_pretrained`). A Hub repo that a registered
    record already names as its weights (e.g. a transformers repo) resolves to that record."""
    if spec.startswith("hf-hub:"):
        repo, revision, _ = _parse_hf_spec(spec)
        known = resolve_name(repo)  # a registered record's repo: that record
        if known is not None:
            return get_record(known)
        path = hub_download(repo, "config.json", revision=revision)
        weights = ({"hf_hub_id": repo, "filename": "model.safetensors", "revision": revision or "main",
                    "format": "segzoo"},)
        default_name = repo.split("/")[-1]
    elif spec.startswith("local-dir:"):
        folder = Path(spec[len("local-dir:"):]).expanduser()
        path = folder / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no config.json (expected the layout save_pretrained writes)")
        weights = ({"path": str(folder / "model.safetensors"), "format": "segzoo"},)
        default_name = folder.name
    else:
        raise ValueError(f"{spec!r}: expected hf-hub:org/repo or local-dir:/path")
    try:
        cfg = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{spec}: config.json is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("arch"), dict):
        raise ValueError(f"{spec}: config.json is not a segzoo config (no 'arch'); "
                         "save the model with segzoo's save_pretrained")
    cfg = dict(cfg, weights=list(weights))
    cfg.setdefault("name", default_name)
    cfg.setdefault("architecture", cfg["arch"].get("segmentor", ""))
    cfg.setdefault("backbone", cfg["arch"].get("backbone", {}).get("type", ""))
    cfg.setdefault("dataset", "")
    cfg.setdefault("num_classes", cfg["arch"]["num_classes"])
    return ModelRecord(**_record_kwargs(cfg))
