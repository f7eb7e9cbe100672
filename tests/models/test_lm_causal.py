"""The causal mask really masks: a future token cannot change earlier logits."""

from __future__ import annotations

import pytest
import torch
from tiny_models import LM_SHAPE, VOCAB, tiny, tiny_input


@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("resolution", ["fp32", "2.32", "bnn"])
def test_future_tokens_do_not_change_past_logits(resolution: str, norm: str) -> None:
    torch.manual_seed(0)
    model = tiny("lm", resolution, norm=norm)
    x = tiny_input("lm", batch=2)
    k = LM_SHAPE[0] // 2
    y = x.clone()
    y[:, k] = (x[:, k] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[:, :k], b[:, :k])
    assert not torch.allclose(a[:, k:], b[:, k:])  # the changed token is seen from k on
