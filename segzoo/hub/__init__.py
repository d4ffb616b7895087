"""Where weights come from and where they go: sources tried in order (local files, release URLs,
the Hugging Face Hub), the download and conversion caches, and the ``save_pretrained`` /
``push_to_hub`` folder layout.

Cache layout (root: ``$SEGZOO_CACHE``, default ``~/.cache/segzoo``)::

    downloads/<url hash>/<filename>     release-URL files, renamed into place only when complete
    downloads/ledger.json               {url: {sha256, size, path}} recorded on first download
    converted/<record name>/model.safetensors + meta.json
                                        a record's weights in segzoo's layout; meta.json names the
                                        file, its sha256, the source that served it, the sha256 of the
                                        original file it was converted from (a changed upstream file
                                        reconverts) and a fingerprint of the record's weights + arch
                                        (a changed record reconverts)

Hub files live in the Hugging Face cache (``hf_hub_download``: ``HF_HOME`` / ``HF_HUB_CACHE``,
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``). ``HF_HUB_OFFLINE=1`` also keeps release URLs off the network.

Modules, one job each: ``files`` (environment, atomic writes), ``download`` (release URLs and
their ledger), ``hf`` (the Hub), ``sources`` (fallback over a record's sources, ``checkpoint=``
values), ``cache`` (the conversion cache), ``saving`` (save / push / read back).
"""
from ..convert.checkpoint import read_state_dict
from ..errors import ChecksumMismatchError, WeightsUnavailableError
from .cache import load_pretrained
from .download import download_url
from .files import cache_root
from .hf import hub_download
from .saving import push_to_hub, record_from_pretrained_dir, save_pretrained
from .sources import fetch_weights, load_checkpoint, saved_config

__all__ = ["WeightsUnavailableError", "ChecksumMismatchError", "cache_root", "read_state_dict", "load_checkpoint",
           "saved_config", "load_pretrained", "fetch_weights", "download_url", "hub_download",
           "record_from_pretrained_dir", "save_pretrained", "push_to_hub"]
