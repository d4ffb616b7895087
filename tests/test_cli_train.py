"""`segzoo train` / `segzoo eval` on a folder dataset (one process; torchrun runs the same code, see
test_fit's DDP test), and `--set` parsing."""
import json

import pytest

from segzoo.cli import _parse_sets, main
from segzoo.data import FolderDataset, ShapesDataset


def test_set_values_parse_as_json_or_text():
    assert _parse_sets(["iterations=600", "lr=0.01", "amp=bf16", "crop_size=[64,64]", "amp2=null"]) == {
        "iterations": 600, "lr": 0.01, "amp": "bf16", "crop_size": [64, 64], "amp2": None}
    with pytest.raises(ValueError, match="key=value"):
        _parse_sets(["iterations"])


def test_train_then_eval_from_the_command_line(tmp_path, capsys):
    root = tmp_path / "data"
    classes = ["background", "circle", "square", "triangle"]
    for split, n, seed in (("train", 4, 0), ("val", 2, 1)):
        shapes = ShapesDataset(n, seed=seed)
        FolderDataset.write(root, [shapes[i] for i in range(n)], classes, split=split)
    out = tmp_path / "run"
    assert main(["train", "segformer_mit_b0_ade20k", "--data", str(root), "--dataset", "folder", "--init", "none",
                 "--out", str(out), "--set", "iterations=2", "--set", "batch_size=2", "--set", "crop_size=64",
                 "--set", "num_workers=0", "--set", "progress=false"]) == 1  # not a recipe field
    assert "unknown recipe field 'progress'" in capsys.readouterr().err
    assert main(["train", "segformer_mit_b0_ade20k", "--data", str(root), "--dataset", "folder", "--init", "none",
                 "--out", str(out), "--set", "iterations=2", "--set", "batch_size=2", "--set", "crop_size=64",
                 "--set", "num_workers=0"]) == 0
    assert "trained segformer_mit_b0_ade20k" in capsys.readouterr().out
    assert (out / "last" / "model.safetensors").is_file() and (out / "best" / "config.json").is_file()
    assert main(["eval", f"local-dir:{out / 'last'}", "--data", str(root), "--dataset", "folder",
                 "--mode", "whole"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) >= {"mIoU", "mAcc", "aAcc", "mDice"}


def test_predict_under_torchrun_splits_the_images(tmp_path, monkeypatch, capsys):
    """With torchrun's RANK / WORLD_SIZE, each process predicts its share of a folder (rank r takes
    images r, r + world, ...)."""
    import segzoo
    import torch
    from PIL import Image
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        Image.fromarray(ShapesDataset(5)[i]["image"]).save(photos / f"p{i}.png")
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    torch.save(segzoo.create_model("segformer_mit_b0_ade20k").state_dict(), weights)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["predict", str(photos), "--model", "segformer_mit_b0_ade20k", "--checkpoint", str(weights),
                 "--mode", "whole", "--out", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").glob("*_labels.png"))
    assert written == ["p1_labels.png", "p3_labels.png"]
