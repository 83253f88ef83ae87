"""patchify / unpatchify (docs/design.md §4.12): token order t-block major then joint, features (frame, channel)."""
import pytest
import torch

from fastskel import ops


def test_patchify_hand_layout():
    n, c, t, v, l = 1, 3, 4, 2, 2
    x = torch.arange(n * c * t * v, dtype=torch.float32).view(n, c, t, v)
    p = ops.patchify(x, l)
    assert p.shape == (1, (t // l) * v, l * c)
    # token 1 = t-block 0, joint 1; features (frame 0: c0 c1 c2, frame 1: c0 c1 c2)
    expected = torch.tensor([x[0, cc, f, 1] for f in range(2) for cc in range(3)])
    torch.testing.assert_close(p[0, 1], expected)
    # token 2 = t-block 1, joint 0
    torch.testing.assert_close(p[0, 2, 0], x[0, 0, 2, 0])


@pytest.mark.parametrize("shape,l", [((2, 3, 120, 25), 4), ((3, 2, 9, 7), 3), ((1, 3, 5, 1), 5)])
def test_roundtrip(shape, l):
    x = torch.randn(shape)
    torch.testing.assert_close(ops.unpatchify(ops.patchify(x, l), l, shape[3]), x)


def test_patch_bad_input():
    x = torch.randn(2, 3, 10, 25)
    with pytest.raises(ValueError, match="frames_per_patch.*divisor of T=10"):
        ops.patchify(x, 4)
    with pytest.raises(ValueError, match="x: expected a 4-D"):
        ops.patchify(x[0], 2)
    with pytest.raises(TypeError, match="frames_per_patch: expected an int"):
        ops.patchify(x, 2.0)
    with pytest.raises(TypeError, match="x: expected dtype"):
        ops.patchify(x.long(), 2)
    with pytest.raises(ValueError, match="num_joints"):
        ops.unpatchify(ops.patchify(x, 2), 2, 24)
