"""The finite-difference checker itself: it catches wrong gradients and only excuses true kinks."""

from __future__ import annotations

import numpy as np

from cnnlab.backprop.gradcheck import central_difference, compare_coordinates, is_kink


def test_central_difference_of_a_cubic() -> None:
    x = np.array([0.3, -1.2, 2.0])
    for i in range(3):
        num = central_difference(lambda: float((x**3).sum()), x, (i,), 1e-6)
        assert abs(num - 3 * x[i] ** 2) < 1e-8
    np.testing.assert_array_equal(x, [0.3, -1.2, 2.0])  # restored after perturbing


def test_wrong_gradient_fails_and_is_not_excused_as_a_kink() -> None:
    x = np.random.default_rng(0).standard_normal(20)
    wrong = 2 * x * 1.01  # true gradient of Σx² is 2x
    row = compare_coordinates("x", lambda: float((x**2).sum()), x, wrong, 10, np.random.default_rng(0))
    assert not row["passed"] and row["kinks"] == 0 and row["max_rel_diff"] > 5e-3
    right = compare_coordinates("x", lambda: float((x**2).sum()), x, 2 * x, 10, np.random.default_rng(0))
    assert right["passed"] and right["n"] == 10


def test_relu_at_zero_and_max_tie_are_kinks_smooth_points_are_not() -> None:
    x = np.array([0.0, 1.5, 1.5, -2.0])
    relu_sum = lambda: float(np.maximum(x, 0).sum())  # noqa: E731
    assert is_kink(relu_sum, x, (0,), 1e-6)
    assert not is_kink(relu_sum, x, (1,), 1e-6)
    assert is_kink(lambda: float(x.max()), x, (1,), 1e-6)  # x[1] == x[2]: a tie
    assert not is_kink(lambda: float(np.sin(x).sum()), x, (3,), 1e-6)
