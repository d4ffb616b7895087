"""PointRend's point operations (plain PyTorch, ``segzoo.models.heads.pointrend``) against their
definitions written out as loops over points and pixels on tiny tensors: ``point_sample`` (mmcv's:
``grid_sample`` at points in [0, 1]), the uncertainty (second-best minus best score), the test-time
choice of the most uncertain pixels and the training-time importance sampling."""
import math

import pytest
import torch

from segzoo.models.heads.pointrend import most_uncertain_points, point_sample, sample_points, uncertainty


def _sample_loop(x, points, align_corners, mode):
    """The sampling written out: pixel centres at integer coordinates, zeros outside the map."""
    n, c, h, w = x.shape
    out = torch.zeros(n, c, points.shape[1], dtype=torch.float64)

    def at(b, ch, i, j):
        return float(x[b, ch, i, j]) if 0 <= i < h and 0 <= j < w else 0.0

    for b in range(n):
        for p in range(points.shape[1]):
            px, py = float(points[b, p, 0]), float(points[b, p, 1])
            if align_corners:
                fx, fy = px * (w - 1), py * (h - 1)
            else:
                fx, fy = px * w - 0.5, py * h - 0.5
            for ch in range(c):
                if mode == "nearest":
                    out[b, ch, p] = at(b, ch, round(fy), round(fx))  # round half to even, as grid_sample
                    continue
                x0, y0 = math.floor(fx), math.floor(fy)
                ax, ay = fx - x0, fy - y0
                out[b, ch, p] = ((1 - ay) * ((1 - ax) * at(b, ch, y0, x0) + ax * at(b, ch, y0, x0 + 1))
                                 + ay * ((1 - ax) * at(b, ch, y0 + 1, x0) + ax * at(b, ch, y0 + 1, x0 + 1)))
    return out


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_point_sample_matches_loops(align_corners, mode):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g)
    points = torch.rand(2, 7, 2, generator=g) * 1.2 - 0.1  # some outside [0, 1]: zero padding
    points[0, 0] = torch.tensor([0.0, 0.0])
    points[1, 0] = torch.tensor([1.0, 1.0])
    ours = point_sample(x, points, align_corners=align_corners, mode=mode)
    assert ours.shape == (2, 3, 7)
    torch.testing.assert_close(ours.double(), _sample_loop(x, points, align_corners, mode), rtol=1e-5, atol=1e-6)
    # a grid of points (N, Hp, Wp, 2) keeps its layout
    grid = points.view(2, 7, 1, 2)
    torch.testing.assert_close(point_sample(x, grid, align_corners=align_corners, mode=mode)[..., 0], ours)


def test_uncertainty_is_the_top_two_margin():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 3, 5, generator=g)
    ours = uncertainty(logits)
    assert ours.shape == (2, 1, 3, 5)
    for b in range(2):
        for i in range(3):
            for j in range(5):
                best, second = sorted(logits[b, :, i, j].tolist(), reverse=True)[:2]
                assert float(ours[b, 0, i, j]) == pytest.approx(second - best, abs=1e-6)


@pytest.mark.parametrize("num_points", [5, 1000])
def test_most_uncertain_points_match_loops(num_points):
    g = torch.Generator().manual_seed(2)
    h, w = 3, 4
    logits = torch.randn(2, 5, h, w, generator=g)
    index, points = most_uncertain_points(logits, num_points)
    k = min(num_points, h * w)
    assert index.shape == (2, k) and points.shape == (2, k, 2)
    for b in range(2):
        scores = []
        for i in range(h):
            for j in range(w):
                best, second = sorted(logits[b, :, i, j].tolist(), reverse=True)[:2]
                scores.append((second - best, i * w + j))
        expected = [flat for _, flat in sorted(scores, key=lambda s: -s[0])[:k]]
        assert index[b].tolist() == expected
        for p, flat in enumerate(expected):  # the pixel's centre, (x, y) in [0, 1]
            assert points[b, p].tolist() == pytest.approx([(flat % w + 0.5) / w, (flat // w + 0.5) / h])


def test_sample_points_takes_the_most_uncertain_of_the_oversampled():
    logits = torch.randn(2, 4, 6, 7, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(4)
    points = sample_points(logits, num_points=8, oversample_ratio=3, importance_sample_ratio=0.75)
    assert points.shape == (2, 8, 2) and bool(((points >= 0) & (points <= 1)).all())
    torch.manual_seed(4)  # the same draws, the choice written out
    candidates = torch.rand(2, 24, 2)
    extra = torch.rand(2, 2, 2)
    sampled = _sample_loop(logits, candidates, False, "bilinear")
    for b in range(2):
        margins = []
        for p in range(24):
            best, second = sorted(sampled[b, :, p].tolist(), reverse=True)[:2]
            margins.append((second - best, p))
        chosen = [p for _, p in sorted(margins, key=lambda m: -m[0])[:6]]
        torch.testing.assert_close(points[b, :6], candidates[b, chosen])
        torch.testing.assert_close(points[b, 6:], extra[b])
