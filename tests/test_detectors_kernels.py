"""`detectors.kernels.blend`: a masked copy, bit for bit, without branches."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.kernels import blend, lanes


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.int64)


def test_blend_copies_exactly_the_masked_bits_including_nan_inf_and_negative_zero() -> None:
    rng = np.random.default_rng(3)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324, 1e308])
    dst = rng.choice(specials, (3, 40))
    src = rng.normal(size=(3, 40))
    src[rng.random((3, 40)) < 0.4] = rng.choice(specials, 1)[0]
    mask = rng.random((3, 40)) < 0.5
    want = dst.copy()
    np.copyto(want, src, where=mask)
    blend(dst, src, mask)
    assert (_bits(dst) == _bits(want)).all()


def test_blend_broadcasts_a_row_of_times_over_streams_and_shares_lanes() -> None:
    t = np.arange(5, dtype=np.float64) + 0.5
    last = np.full((2, 5), -np.inf)
    seen = np.full((2, 5), np.nan)
    mask = np.array([[True, False, True, False, False], [False, False, False, True, True]])
    lane = lanes(mask)
    blend(last, t, lane=lane)
    blend(seen, t, lane=lane)
    assert last.tolist() == [[0.5, -np.inf, 2.5, -np.inf, -np.inf],
                             [-np.inf, -np.inf, -np.inf, 3.5, 4.5]]
    assert (np.isnan(seen) == ~mask).all()
    assert (seen[mask] == np.broadcast_to(t, (2, 5))[mask]).all()


def test_blend_on_a_strided_view_writes_through_to_its_base() -> None:
    base = np.zeros((4, 6))
    view = base[::2]  # rows 0 and 2
    blend(view, np.ones(6), np.ones((2, 6), bool))
    assert base.sum(axis=1).tolist() == [6.0, 0.0, 6.0, 0.0]


def test_blend_copies_4_byte_values_with_their_own_lanes() -> None:
    rng = np.random.default_rng(4)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, 3e38], np.float32)
    dst = rng.choice(specials, (5, 33))
    src = rng.normal(size=(5, 33)).astype(np.float32)
    mask = rng.random((5, 33)) < 0.5
    want = dst.copy()
    np.copyto(want, src, where=mask)
    blend(dst, src, lane=lanes(mask, np.int32))
    assert (dst.view(np.int32) == want.view(np.int32)).all()
    blend(dst, np.zeros_like(src), mask)  # lanes of the values' size when given a mask
    assert (dst[mask] == 0).all()
    assert (dst.view(np.int32)[~mask] == want.view(np.int32)[~mask]).all()


def test_lanes_are_all_bits_where_true_for_any_mask_layout() -> None:
    mask = np.array([[True, False, True], [False, True, True]])[:, ::-1]  # not contiguous
    assert lanes(mask).tolist() == [[-1, 0, -1], [-1, -1, 0]]
    assert lanes(mask, np.int32).dtype == np.int32
    assert lanes(np.array([1, 0, 2])).tolist() == [-1, 0, -1]  # truthy, not bit patterns


def test_blend_wants_a_mask_or_its_lanes_and_values_of_one_size() -> None:
    with pytest.raises(TypeError, match="mask"):
        blend(np.zeros(3), np.ones(3))
    with pytest.raises(TypeError, match="8- or 4-byte"):
        blend(np.zeros(3), np.ones(3, np.float32), np.ones(3, bool))
    with pytest.raises(TypeError, match="8- or 4-byte"):
        blend(np.zeros(3, np.int16), np.ones(3, np.int16), np.ones(3, bool))
    with pytest.raises(TypeError, match="int32 lanes"):
        blend(np.zeros(3, np.float32), np.ones(3, np.float32), lane=lanes(np.ones(3, bool)))
