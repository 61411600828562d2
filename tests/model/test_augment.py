"""gan.model.augment: DiffAugment's translation and cutout, per member and differentiable."""

import pytest
import torch

from gan.errors import ConfigError
from gan.model.augment import cutout, diff_augment, draw_cutout, draw_translation, parse_policy, translate
from tests.helpers import CPU, gens


def one_dot(n: int, value: float = 1.0, background: float = -1.0) -> torch.Tensor:
    images = torch.full((n, 1, 32, 32), background)
    images[:, 0, 16, 16] = value
    return images


def test_translation_shifts_by_at_most_four_pixels_filling_with_background():
    shift = draw_translation(200, 32, torch.Generator().manual_seed(0), CPU)
    out = translate(one_dot(200), shift, torch.full((200, 1, 1, 1), -1.0))
    assert all((img == 1.0).sum() == 1 for img in out)  # the dot moved, nothing was smeared
    positions = [tuple((img[0] == 1.0).nonzero()[0].tolist()) for img in out]
    assert positions == [
        (16 - r, 16 - c) for r, c in zip(shift[0].flatten().tolist(), shift[1].flatten().tolist(), strict=True)
    ]
    offsets = set(positions)
    assert max(max(abs(r - 16), abs(c - 16)) for r, c in offsets) == 4 and len(offsets) > 40
    edge = torch.zeros(2, 1, 32, 32)
    edge[..., :, 0] = 5.0  # a bright left column shifted right leaves each image's own background behind it
    shift, fill = torch.tensor([[0, 0], [-1, -1]]).view(2, 2, 1, 1), torch.tensor([-1.0, 0.5]).view(2, 1, 1, 1)
    shifted = translate(edge, shift, fill)
    assert (shifted[0, :, :, 0] == -1.0).all() and (shifted[1, :, :, 0] == 0.5).all()
    assert (shifted[:, :, :, 1] == 5.0).all()


def test_cutout_blanks_a_16_pixel_square_to_background():
    centre = draw_cutout(300, 32, torch.Generator().manual_seed(0), CPU)
    out = cutout(torch.zeros(300, 1, 32, 32), centre, torch.full((300, 1, 1, 1), -1.0))
    blanked = (out == -1.0).sum(dim=(1, 2, 3))
    assert blanked.max().item() == 256 and blanked.min().item() >= 64  # a full square, or clipped at a corner
    rows = (out[:, 0] == -1.0).any(dim=2).sum(dim=1)
    assert rows.max().item() == 16
    middle = cutout(torch.zeros(1, 1, 32, 32), torch.full((2, 1, 1, 1), 16), torch.full((1, 1, 1, 1), -1.0))
    assert (middle[0, 0, 8:24, 8:24] == -1).all() and (middle == -1).sum() == 256


def test_diff_augment_is_differentiable_per_member_and_parses_its_policy():
    policy = ("translation", "cutout")
    x = torch.randn(2, 4, 1024, requires_grad=True)
    out = diff_augment(x, policy, torch.tensor([-1.0, 0.0]), gens(0, 1))
    assert out.shape == (2, 4, 1024)
    out.sum().backward()
    assert x.grad is not None and x.grad.sum() > 0  # G gets gradients through the transformation
    alone = diff_augment(x[1:], policy, torch.tensor([0.0]), gens(1))
    assert torch.equal(out[1], alone[0])  # member 1 is augmented as it is alone
    flat = torch.full((2, 4, 1024), 5.0)
    blank = diff_augment(flat, ("cutout",), torch.tensor([-1.0, 0.0]), gens(0, 1))
    assert set(blank[0].unique().tolist()) == {5.0, -1.0} and set(blank[1].unique().tolist()) == {5.0, 0.0}
    assert torch.equal(diff_augment(x, parse_policy("none"), torch.zeros(2), gens(0, 1)), x)
    assert parse_policy("none") == () and parse_policy(None) == ()
    assert parse_policy(["cutout"]) == ("cutout",) and parse_policy("translation, cutout") == policy
    with pytest.raises(ConfigError, match="Unknown augmentation 'color' in model.augment='color'.*translation, cutout"):
        parse_policy("color")
