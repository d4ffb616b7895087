"""The attention operators that replace mmcv's compiled ops, against their definitions written out
as loops over pixels (mmcv's CPU kernels for ``PSAMask``; mmcv's ``CrissCrossAttention``, whose
pure-PyTorch and former CUDA versions agree: the pixel itself counted once), and the attention
modules of DANet against theirs."""
import math

import pytest
import torch

from segzoo.models.heads.cc import criss_cross_attention
from segzoo.models.heads.da import ChannelAttention
from segzoo.models.heads.psa import psa_mask


def _criss_cross_loops(q, k, v):
    n, _, h, w = q.shape
    out = torch.zeros(n, v.shape[1], h, w, dtype=q.dtype)
    for b in range(n):
        for y in range(h):
            for x in range(w):
                cells = [(i, x) for i in range(h) if i != y] + [(y, j) for j in range(w)]
                energy = torch.stack([q[b, :, y, x] @ k[b, :, i, j] for i, j in cells])
                attn = energy.softmax(0)
                for a, (i, j) in zip(attn, cells):
                    out[b, :, y, x] += a * v[b, :, i, j]
    return out


@pytest.mark.parametrize("shape", [(1, 2, 3, 4), (2, 3, 4, 1), (1, 2, 1, 5)])
def test_criss_cross_attention_matches_loops(shape):
    g = torch.Generator().manual_seed(0)
    n, c, h, w = shape
    q, k = (torch.randn(n, c, h, w, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(n, c + 1, h, w, generator=g, dtype=torch.float64)
    torch.testing.assert_close(criss_cross_attention(q, k, v), _criss_cross_loops(q, k, v))


def _psa_mask_loops(x, mode, mask_size):
    """mmcv's ``psamask_{collect,distribute}_forward`` (CPU), index for index."""
    n, _, hf, wf = x.shape
    mh, mw = mask_size
    half_h, half_w = (mh - 1) // 2, (mw - 1) // 2
    out = torch.zeros(n, hf * wf, hf, wf, dtype=x.dtype)
    flat_out, flat_in = out.view(-1), x.reshape(-1)
    for b in range(n):
        for h in range(hf):
            for w in range(wf):
                for hidx in range(max(0, half_h - h), min(mh, hf + half_h - h)):
                    for widx in range(max(0, half_w - w), min(mw, wf + half_w - w)):
                        p = (hidx + h - half_h) * wf + (widx + w - half_w)
                        src = ((b * mh * mw + hidx * mw + widx) * hf + h) * wf + w
                        if mode == "collect":
                            dst = (b * hf * wf + p) * hf * wf + h * wf + w
                        else:
                            dst = (b * hf * wf + h * wf + w) * hf * wf + p
                        flat_out[dst] = flat_in[src]
    return out


@pytest.mark.parametrize("mode", ["collect", "distribute"])
@pytest.mark.parametrize("mask_size,shape", [((5, 7), (1, 2, 3, 4)),   # window covers the map
                                             ((3, 3), (2, 2, 3, 4)),   # window smaller than the map
                                             ((4, 2), (1, 1, 3, 4)),   # even sizes
                                             ((9, 9), (1, 1, 2, 3))])  # window far larger than the map
def test_psa_mask_matches_loops(mode, mask_size, shape):
    n, _, h, w = shape
    x = torch.randn(n, mask_size[0] * mask_size[1], h, w, generator=torch.Generator().manual_seed(1))
    assert torch.equal(psa_mask(x, mode, mask_size), _psa_mask_loops(x, mode, mask_size))


def test_psa_mask_gradient():
    """The gradient reaches exactly the window cells that land on the map (mmcv's backward)."""
    x = torch.randn(1, 9, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: psa_mask(t, "distribute", (3, 3)), (x,))
    psa_mask(x, "collect", (3, 3)).sum().backward()
    used = _psa_mask_loops(torch.arange(1., 1 + x.numel()).view_as(x), "collect", (3, 3))
    expected = torch.zeros(x.numel())
    expected[used[used > 0].long() - 1] = 1
    assert torch.equal(x.grad.flatten(), expected.double())


def test_channel_attention_matches_definition():
    cam = ChannelAttention()
    with torch.no_grad():
        cam.gamma.fill_(0.7)
    x = torch.randn(2, 3, 2, 5, dtype=torch.float64)
    cam.double()
    expected = torch.empty_like(x)
    for b in range(2):
        f = x[b].reshape(3, -1)
        for i in range(3):
            sims = [float(f[i] @ f[j]) for j in range(3)]
            logits = torch.tensor([max(sims) - s for s in sims], dtype=torch.float64)
            weights = logits.softmax(0)
            expected[b, i] = sum(weights[j] * x[b, j] for j in range(3)) * 0.7 + x[b, i]
    torch.testing.assert_close(cam(x), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_ops_on_gpu():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 4, 5, 6, generator=g) for _ in range(3))
    torch.testing.assert_close(criss_cross_attention(q.cuda(), k.cuda(), v.cuda()).cpu(),
                               criss_cross_attention(q, k, v), rtol=1e-4, atol=1e-5)
    x = torch.randn(2, 49, 5, 6, generator=g)
    for mode in ("collect", "distribute"):
        assert torch.equal(psa_mask(x.cuda(), mode, (7, 7)).cpu(), psa_mask(x, mode, (7, 7)))
    assert math.isfinite(float(psa_mask(x.cuda().requires_grad_(), "collect", (7, 7)).sum()))
