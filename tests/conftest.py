import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session writes its converted weights and Hub downloads under a temp dir."""
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("SEGZOO_CACHE", str(root / "segzoo-cache"))
    monkeypatch.setenv("HF_HOME", str(root / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """A fresh segzoo cache and Hugging Face cache per test, HF_ENDPOINT at a running Hub emulator
    (tests/hub_emulator.py): downloads take segzoo's and huggingface_hub's real code paths."""
    from hub_emulator import HubEmulator
    from segzoo import hub
    em = HubEmulator().start()
    monkeypatch.setenv("SEGZOO_CACHE", str(tmp_path / "segzoo-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_ENDPOINT", em.endpoint)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setattr(hub.hf, "_REACH", {})  # endpoints found unreachable (ports get reused)
    yield em
    em.stop()


@pytest.fixture
def timm_on_hub(hub_env):
    """``serve(tag, **kwargs) -> state_dict``: a random state dict of timm's architecture for ``tag``
    (built on the meta device: no init cost), put on the emulated Hub where timm's pretrained_cfg for
    ``tag`` points, as timm publishes its ImageNet weights."""
    import timm
    from safetensors.torch import save
    from timm.models import get_pretrained_cfg

    def serve(tag: str, seed: int = 0, **kwargs) -> dict:
        with torch.device("meta"):
            net = timm.create_model(tag.split(".")[0], pretrained=False, **kwargs)
        g = torch.Generator().manual_seed(seed)
        sd = {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else torch.zeros(v.shape, dtype=v.dtype)
              for k, v in net.state_dict().items()}
        hub_env.add_repo_file(get_pretrained_cfg(tag).hf_hub_id, "model.safetensors", save(sd))
        return sd
    return serve
