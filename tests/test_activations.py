import math

import pytest
import torch
from torch import nn

from gan.activations import (
    ACTIVATION_NAMES,
    ActivationError,
    build_activation,
    check_activation,
    data_range,
    output_bounds,
)

REQUIRED = {"relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "silu", "mish", "softplus", "tanh", "sigmoid",
            "hardtanh", "identity"}


def test_registry_has_every_required_name():
    assert REQUIRED <= set(ACTIVATION_NAMES)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_every_name_builds_and_stays_within_its_bounds(name):
    act = build_activation(name)
    assert isinstance(act, nn.Module)
    x = torch.linspace(-50, 50, 20001)
    y = act(x)
    lo, hi = output_bounds(name)
    assert y.min().item() >= lo - 1e-4
    assert y.max().item() <= hi + 1e-4
    # the bounds are tight where they are finite: some input comes close to each
    if math.isfinite(lo):
        assert y.min().item() <= lo + 1e-3
    if math.isfinite(hi):
        assert y.max().item() >= hi - 1e-3


def test_parameters_reach_the_module():
    act = build_activation("leaky_relu", {"negative_slope": 0.3})
    assert act(torch.tensor([-1.0])).item() == pytest.approx(-0.3)
    ht = build_activation("hardtanh", {"min_val": -2.0, "max_val": 3.0})
    assert ht(torch.tensor([-10.0, 10.0])).tolist() == [-2.0, 3.0]
    assert output_bounds("hardtanh", {"min_val": -2.0, "max_val": 3.0}) == (-2.0, 3.0)
    assert output_bounds("elu", {"alpha": 0.5}) == (-0.5, math.inf)


def test_prelu_is_fresh_per_call():
    a, b = build_activation("prelu"), build_activation("prelu")
    assert a.weight is not b.weight


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ActivationError) as err:
        build_activation("swishy", where="model.g_act")
    msg = str(err.value)
    assert "'swishy'" in msg and "model.g_act" in msg
    for name in ACTIVATION_NAMES:
        assert name in msg


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(ActivationError, match="negative_slop.*Valid parameters: negative_slope"):
        check_activation("leaky_relu", {"negative_slop": 0.1})


@pytest.mark.parametrize(
    "name,params,expected",
    [
        ("tanh", None, (-1.0, 1.0)),
        ("sigmoid", None, (0.0, 1.0)),
        ("hardtanh", {"min_val": 0.0, "max_val": 1.0}, (0.0, 1.0)),
        ("relu", None, (0.0, 1.0)),
        ("softplus", None, (0.0, 1.0)),
        ("gelu", None, (0.0, 1.0)),
        ("identity", None, (-1.0, 1.0)),
        ("leaky_relu", None, (-1.0, 1.0)),
        ("selu", None, (-1.0, 1.0)),
        ("elu", {"alpha": 0.5}, (0.0, 1.0)),
    ],
)
def test_data_range_follows_the_output_activation(name, params, expected):
    assert data_range(name, params) == expected


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_generator_can_reach_both_ends_of_its_data_range(name):
    lo, hi = data_range(name)
    blo, bhi = output_bounds(name)
    assert blo <= lo < hi <= bhi
