"""The numbered grid of candidates."""

from __future__ import annotations

import numpy as np
import pytest

from outpaint_engine.grid import candidate_grid, grid_shape


def _candidates(count: int, width: int, height: int) -> list[np.ndarray]:
    rng = np.random.default_rng(count)
    return [rng.integers(0, 256, (height, width, 3), np.uint8) for _ in range(count)]


@pytest.mark.parametrize(
    ("count", "size", "shape"),
    [(2, (160, 90), (2, 1)), (2, (90, 160), (1, 2)), (2, (100, 100), (1, 2)), (3, (160, 90), (2, 2)),
     (4, (90, 160), (2, 2))],
)  # fmt: skip
def test_each_candidate_has_its_cell_in_reading_order(count, size, shape) -> None:
    width, height = size
    candidates = _candidates(count, width, height)
    grid = candidate_grid(candidates)
    rows, columns = grid_shape(count, width, height)
    assert (rows, columns) == shape
    spare = ((grid.shape[0] - rows * height, rows), (grid.shape[1] - columns * width, columns))
    gaps = {extra // (cells - 1) for extra, cells in spare if cells > 1}
    (gap,) = gaps  # one gap between rows and columns alike
    assert gap >= 4
    for n, candidate in enumerate(candidates):
        row, column = divmod(n, columns)
        top, left = row * (height + gap), column * (width + gap)
        cell = grid[top : top + height, left : left + width]
        below_badge = slice(height // 2, height)  # the number sits in the top-left corner
        np.testing.assert_array_equal(cell[below_badge], candidate[below_badge])
        assert not np.array_equal(cell[: height // 4, : width // 4], candidate[: height // 4, : width // 4])


def test_candidates_of_different_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="same size"):
        candidate_grid([*_candidates(1, 64, 64), *_candidates(1, 64, 72)])
    with pytest.raises(ValueError, match="no candidates"):
        candidate_grid([])
