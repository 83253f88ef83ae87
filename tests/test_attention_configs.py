"""Default tiled-backward configs per Triton version (the compile check's spill finding on 3.6)."""
import pytest

pytest.importorskip("triton")

from fastskel.kernels import attention as ka  # noqa: E402


@pytest.mark.parametrize("version, rope, first", [
    ((3, 6), True, ka._ROPE_BWD_TILED_OLD),
    ((3, 6), False, dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)),
    ((3, 9), True, dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)),
])
def test_rope_tiled_backward_default(monkeypatch, version, rope, first):
    monkeypatch.setattr(ka, "_TRITON_VERSION", version)
    space = ka._bwd_tiled_default_first(ka._bwd_tiled_space(205, 205, 32), rope, 32)
    assert space[0] == first
    assert len({tuple(sorted(c.items())) for c in space}) == len(space)   # no duplicate
    # the autotuner (pruned to _bwd_tiled_space) can always pick the default
    keys = {tuple(sorted(c.items())) for c in ka._bwd_tiled_space(205, 205, 32)}
    assert tuple(sorted(space[0].items())) in keys
