"""`segzoo predict IMAGE --model mobilesam_tinyvit --points/--box`: mask PNG, JSON (scores, RLE) and
overlay from the command line (random weights through --checkpoint, a file of segzoo's layout)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import segzoo
from segzoo.cli import main


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("sam") / "mobilesam_random.pt"
    torch.manual_seed(0)
    torch.save(segzoo.create_model("mobilesam_tinyvit").state_dict(), path)
    return path


def test_point_and_box_prompts(tmp_path, weights, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.RandomState(0).rand(90, 120, 3) * 255).astype(np.uint8)).save(photo)
    out = tmp_path / "out"
    assert main(["predict", str(photo), "--model", "mobilesam_tinyvit", "--checkpoint", str(weights),
                 "--points", "40,30;80,60", "--labels", "1,0", "--out", str(out)]) == 0
    mask = np.array(Image.open(out / "photo_mask.png"))
    assert mask.shape == (90, 120) and set(np.unique(mask)) <= {0, 255}
    info = json.loads((out / "photo_mask.json").read_text())
    assert info["masks"][0]["segmentation"]["size"] == [90, 120]
    assert (out / "photo_overlay.png").is_file() and "1 mask(s)" in capsys.readouterr().out
    assert main(["predict", str(photo), "--model", "mobilesam_tinyvit", "--checkpoint", str(weights),
                 "--box", "10,10,60,50", "--out", str(out / "box")]) == 0
    assert main(["predict", str(photo), "--model", "mobilesam_tinyvit", "--checkpoint", str(weights),
                 "--out", str(out)]) == 1
    assert "give --points" in capsys.readouterr().err
