"""README's first command: install, then ``segzoo predict`` on the demo photo kept in the repo.

The command's predict part is read from README.md itself; with weights from a local checkpoint it
writes the label map and the overlay at the photo's size, and offline with empty caches it stops
with one error whose first line names the weights it could not reach (and nothing before it)."""
import re
import shlex
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import segzoo
from segzoo.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


def _readme_predict_args() -> list[str]:
    first = re.search(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S).group(1)
    install, predict = first.split(" && ")
    assert "pip install -e" in install and predict.startswith("segzoo predict ")
    return shlex.split(predict)[1:]


def test_readme_first_command_segments_the_demo_photo(tmp_path, monkeypatch):
    args = _readme_predict_args()
    monkeypatch.chdir(ROOT)
    photo = ROOT / args[1]
    assert photo.is_file() and (ROOT / "docs/assets/README.md").read_text().count("CC0") >= 1
    name = args[args.index("--model") + 1]
    torch.manual_seed(0)
    model = segzoo.create_model(name)  # random weights stand in for the Hub's (no network here)
    model.save_pretrained(tmp_path / "weights")
    out = tmp_path / "preds"
    argv = [*args[:args.index("--out")], "--out", str(out), "--checkpoint", str(tmp_path / "weights")]
    assert cli_main(argv) == 0
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    labels = np.asarray(Image.open(out / "chelsea_labels.png"))
    assert labels.shape == rgb.shape[:2] and labels.max() < model.num_classes
    assert np.asarray(Image.open(out / "chelsea_overlay.png")).shape == rgb.shape


def test_readme_first_command_offline_is_one_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("SEGZOO_CACHE", str(tmp_path / "segzoo"))
    args = _readme_predict_args()
    out = tmp_path / "preds"
    assert cli_main([*args[:args.index("--out")], "--out", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    name = args[args.index("--model") + 1]
    assert err[0].startswith(f"segzoo: error: no weights for {name}: ") and "HF_ENDPOINT" in err[0]
    assert all(line.startswith("  - hf-hub:") for line in err[1:])  # the sources tried, nothing else
    assert not out.exists()
