"""Selection rules on hand-computed cases, including the tie rule."""

import pytest
import torch

from pruning.errors import TicketLabError
from pruning.masks import nm_mask, prune_lowest, prune_lowest_global, prune_lowest_per_row


def test_ties_prune_lower_index_first():
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert prune_lowest(scores, 0.5).tolist() == [[False, False, True, True]]
    assert prune_lowest_per_row(scores, 0.25).tolist() == [[False, True, True, True]]
    assert nm_mask(scores, 2, 4).tolist() == [[False, False, True, True]]


def test_per_row_ranking_4x8():
    s = torch.tensor([[8, 7, 6, 5, 4, 3, 2, 1],
                      [1, 2, 3, 4, 5, 6, 7, 8],
                      [5, 1, 5, 1, 5, 1, 5, 1],
                      [0, 9, 0, 9, 0, 9, 0, 9]], dtype=torch.float)
    m = prune_lowest_per_row(s, 0.5)
    assert m.sum(1).tolist() == [4, 4, 4, 4]
    assert m[0].tolist() == [True] * 4 + [False] * 4
    assert m[1].tolist() == [False] * 4 + [True] * 4
    assert m[2].tolist() == [True, False] * 4
    assert m[3].tolist() == [False, True] * 4


def test_global_threshold_with_ties_across_tensors():
    a, b = torch.tensor([1.0, 2.0, 2.0]), torch.tensor([2.0, 3.0])
    m = prune_lowest_global({"a": a, "b": b}, 0.6)  # k = 3: the 1.0 and the first two 2.0s (tensor order)
    assert m["a"].tolist() == [False, False, False] and m["b"].tolist() == [True, True]


def test_nm_must_divide_width():
    with pytest.raises(TicketLabError, match="does not divide"):
        nm_mask(torch.rand(2, 6), 2, 4)
