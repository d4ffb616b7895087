"""The code's shape: imports point down (import-linter contracts), families register themselves,
and the user-facing model class behaves like its network class."""
import io
import shutil
import subprocess
import sys
from pathlib import Path

import torch

import segzoo

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    out = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "broken" not in out.stdout.split("Contracts:")[-1].split("\n")[0].replace("0 broken", "")


def test_listing_does_not_import_torch():
    code = "import sys, segzoo; n = len(segzoo.list_models()); print(n, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    n, torch_loaded = out.stdout.split()
    assert int(n) == len(segzoo.list_models()) and torch_loaded == "False"


def test_every_family_file_is_registered():
    """Dropping a file into backbones/, heads/ or segmentors/ is all it takes: the packages import
    every module in them, and each family's SSSegmentation translation is found from its own file."""
    import pkgutil

    from segzoo.models import SEGMENTORS, backbones, heads, segmentors
    from segzoo.models.backbones import BACKBONES, backbone_family
    from segzoo.models.foreign import SSSEG_BACKBONES, SSSEG_SEGMENTORS
    for pkg in (backbones, heads, segmentors):
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                assert f"{pkg.__name__}.{info.name}" in sys.modules, info.name
    for kind in BACKBONES:
        assert backbone_family(kind).__name__ == BACKBONES[kind].__module__
    assert {t.__module__ for t in SSSEG_BACKBONES.values()} <= {BACKBONES[k].__module__ for k in BACKBONES}
    for spec in SSSEG_SEGMENTORS.values():  # the translator lives in a head or segmentor file
        assert spec.decode_head.__module__.startswith(("segzoo.models.heads.", "segzoo.models.segmentors.")), spec
    # segmentor classes live in segmentors/, or in a family package of their own (SAM: models/sam/)
    assert all(cls.__module__.startswith(("segzoo.models.segmentors.", "segzoo.models.sam."))
               for cls in SEGMENTORS.values())


def test_model_class_is_the_network_class_with_the_api():
    from segzoo.models import Segmentor
    from segzoo.models.segmentors.ocrnet import OCRNet
    model = segzoo.create_model("ocrnet_resnet50_os8_voc", backbone={"depth": 18},
                                decode_head={"channels": 16, "transform_channels": 8})
    assert isinstance(model, OCRNet) and isinstance(model, Segmentor)
    assert type(model).__name__ == "OCRNet" and callable(model.predict) and callable(model.save_pretrained)
    assert not hasattr(Segmentor, "predict")  # networks know nothing of images or the Hub
    buf = io.BytesIO()
    torch.save(model, buf)  # whole-model pickling finds the class again
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    assert type(again) is type(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
