"""gan.model.activations: the registry, parameters, bounds and data ranges."""

import math

import pytest
import torch
from torch import nn

from gan.errors import ConfigError
from gan.model.activations import ACTIVATION_NAMES, build_activation, check_activation, data_range, output_bounds
from gan.model.population import MemberActivation

REQUIRED = {
    "relu",
    "leaky_relu",
    "prelu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "mish",
    "softplus",
    "tanh",
    "sigmoid",
    "hardtanh",
    "identity",
}


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
    c, d = (MemberActivation(["prelu"], [None], "model.d_act") for _ in range(2))
    assert c.prelu_weight is not d.prelu_weight  # each layer of a population its own slopes


# members 0 and 3 share an activation but are not neighbours (a gather); 1 and 4 differ only in a parameter
MEMBERS = [
    ("relu", None),
    ("leaky_relu", {"negative_slope": 0.3}),
    ("prelu", {"init": 0.1}),
    ("relu", None),
    ("leaky_relu", {"negative_slope": 0.01}),
    ("tanh", None),
    ("prelu", None),
]


def test_member_activation_applies_each_members_own_function():
    names, params = zip(*MEMBERS, strict=True)
    layer = MemberActivation(names, params, "model.g_act")
    x = torch.linspace(-3, 3, 7 * 2 * 5).view(7, 2, 5)
    out = layer(x)
    for k, (name, p) in enumerate(MEMBERS):
        assert torch.allclose(out[k], build_activation(name, p)(x[k])), (k, name)
    assert layer.prelu_weight.shape == (7,) and layer.prelu_weight[[2, 6]].tolist() == pytest.approx([0.1, 0.25])
    assert sorted(len(idx) for _, idx, _ in layer.groups) == [1, 1, 1, 2, 2]  # prelu members share a group
    out[2].sum().backward()  # a PReLU member's slope learns from its own slice only
    assert layer.prelu_weight.grad[2] != 0 and layer.prelu_weight.grad[[0, 1, 3, 4, 5, 6]].abs().sum() == 0
    with pytest.raises(ConfigError, match="'swishy' for model.d_act"):
        MemberActivation(["relu", "swishy"], [None, None], "model.d_act")


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        build_activation("swishy", where="model.g_act")
    msg = str(err.value)
    assert "'swishy'" in msg and "model.g_act" in msg
    for name in ACTIVATION_NAMES:
        assert name in msg


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="negative_slop.*Valid parameters: negative_slope"):
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


def test_prelu_with_one_slope_per_unit_is_refused_not_ignored():
    from gan.model.population import MemberActivation

    with pytest.raises(ConfigError, match="num_parameters=16 for model.g_act: this lab learns one PReLU slope"):
        MemberActivation(["prelu"], [{"num_parameters": 16}], "model.g_act")
    assert MemberActivation(["prelu"], [{"num_parameters": 1}], "model.g_act").prelu_weight.shape == (1,)
