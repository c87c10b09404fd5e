"""Weight averaging (fmc.models.weight_averaging): the average, its swap, its checkpoint form."""

from __future__ import annotations

import pytest
import torch

from fmc.core.errors import FmcConfigError
from fmc.models.module import FusionModule
from fmc.models.weight_averaging import (
    AVERAGE_STATE_KEY,
    AVERAGINGS,
    TRAINED_WEIGHTS_KEY,
    ExponentialAverage,
    build_averager,
    weights_swapped,
)


def test_the_first_update_copies_and_later_ones_follow_the_warm_up():
    layer = torch.nn.Linear(2, 1, bias=False)
    average = ExponentialAverage(decay=0.9)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    average.update(layer)
    assert torch.equal(average.average["weight"], torch.ones(1, 2))
    with torch.no_grad():
        layer.weight.fill_(3.0)
    old = average.weight_of_old()  # min(0.9, 2/11)
    assert old == pytest.approx(2 / 11)
    average.update(layer)
    assert torch.allclose(average.average["weight"], torch.full((1, 2), old * 1 + (1 - old) * 3))
    average.updates = 10_000
    assert average.weight_of_old() == 0.9  # the decay caps the warm-up


def test_span_one_spans_every_step_made_so_far():
    layer = torch.nn.Linear(1, 1, bias=False)
    average = ExponentialAverage(decay=0.999, span=1.0)
    for value in (1.0, 2.0, 3.0, 6.0):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update(layer)
    # d = 2/3, 3/4, 4/5 after the copy: near the plain mean (3.0), the latest step a little more
    assert float(average.average["weight"]) == pytest.approx(2.6)
    narrow = ExponentialAverage(span=1.0 / 9.0)
    narrow.updates = 800  # the default spans about the last ninth of the run
    assert narrow.weight_of_old() == pytest.approx(801 / 810)
    with pytest.raises(ValueError, match="span=0"):
        ExponentialAverage(span=0.0)


def test_integer_buffers_are_copied_not_averaged():
    norm = torch.nn.BatchNorm1d(2)
    average = ExponentialAverage(0.5)
    average.update(norm)
    norm.num_batches_tracked += 7
    average.update(norm)
    assert int(average.average["num_batches_tracked"]) == 7


def test_swapped_weights_come_back_after_the_block_even_on_error():
    layer = torch.nn.Linear(2, 2)
    own = {k: v.clone() for k, v in layer.state_dict().items()}
    other = {k: torch.zeros_like(v) for k, v in own.items()}
    with pytest.raises(RuntimeError), weights_swapped(layer, other):
        assert float(layer.weight.abs().sum()) == 0.0
        raise RuntimeError("inside")
    assert all(torch.equal(layer.state_dict()[k], v) for k, v in own.items())
    with weights_swapped(layer, None):  # nothing to swap: nothing changes
        assert torch.equal(layer.weight, own["weight"])


def test_the_registry_names_both_and_refuses_a_bad_decay():
    assert AVERAGINGS.names()[:2] == ("none", "ema")
    assert build_averager("none") is None
    with pytest.raises(ValueError, match="decay=1.5"):
        build_averager("ema", {"decay": 1.5})
    with pytest.raises(FmcConfigError, match="model.averaging=swa: choose one of none, ema"):
        AVERAGINGS.get("swa")


def tiny_module(averaging: str) -> FusionModule:
    return FusionModule(features=4, depth=2, averaging=averaging,
                        averaging_kwargs={"decay": 0.5} if averaging == "ema" else None)


def test_a_checkpoint_holds_the_average_and_the_trained_weights_beside_it():
    module = tiny_module("ema")
    module._averager.update(module.net)
    with torch.no_grad():
        for parameter in module.net.parameters():
            parameter.add_(1.0)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    name = "net." + next(name for name, _ in module.net.named_parameters())
    assert torch.equal(checkpoint[TRAINED_WEIGHTS_KEY][name], module.state_dict()[name])
    assert torch.allclose(checkpoint["state_dict"][name], module.state_dict()[name] - 1.0,
                          atol=1e-6)
    assert checkpoint[AVERAGE_STATE_KEY] == {"updates": 1, "decay": 0.5, "span": pytest.approx(1 / 9)}
    # Loaded for prediction (no trainer): the state_dict, i.e. the average, is what it gets.
    loaded = tiny_module("ema")
    loaded.on_load_checkpoint(checkpoint)
    assert checkpoint["state_dict"][name] is not checkpoint[TRAINED_WEIGHTS_KEY][name]
    # Without averaging nothing is added.
    plain = tiny_module("none")
    checkpoint = {"state_dict": plain.state_dict()}
    plain.on_save_checkpoint(checkpoint)
    assert set(checkpoint) == {"state_dict"}
