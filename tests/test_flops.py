"""FLOP counting (fastskel.utils.flops): the papers' convention and the full count, AMR 3.8 G and
MAMP-5 13.7 G per action with both bodies (seed 004 Table 1)."""
import pytest
import torch
from torch import nn

from fastskel.methods.amr import AMR, AMRConfig, MAMP, MAMPConfig
from fastskel.nn import MultiheadAttention, MultiheadCrossAttention
from fastskel.nn.decoder import CrossAttentionDecoder
from fastskel.utils import count_flops, flop_breakdown
from fastskel.engine.latency import torch_threads


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def one_action(t=150, v=25, seed=0):
    """One action, both bodies present (the papers count 'per action with both bodies')."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, t, v, 2, generator=g).cumsum(2) * 0.05


def block_macs(dim, mlp_ratio=4.0):
    """MACs per token of one pre-norm block's Linears: qkv, proj, fc1, fc2."""
    h = int(dim * mlp_ratio)
    return dim * 3 * dim + dim * dim + 2 * dim * h


def amr_paper_flops(c: AMRConfig, bodies=2):
    k, q, lk = c.num_visible, c.num_queries, c.num_visible
    d, dd, hh = c.dim, c.decoder_dim, c.head_hidden or c.decoder_dim
    enc = k * c.frames_per_patch * c.in_channels * d + c.depth * k * block_macs(d, c.mlp_ratio)
    bridge = k * d * dd
    q_first = q * dd * dd                                   # shared queries: projected once per batch
    per_layer = q * dd * dd + lk * dd * 2 * dd + q * dd * dd + q * 2 * dd * int(dd * c.mlp_ratio)
    dec = per_layer * c.decoder_depth - q * dd * dd + q_first / bodies
    head = q * (dd * hh + hh * hh + hh * c.target_dim)
    return 2 * bodies * (enc + bridge + dec + head)


def mamp_paper_flops(c: MAMPConfig, bodies=2):
    k, n = c.num_visible, c.num_tokens
    d, dd = c.dim, c.decoder_dim
    enc = k * c.frames_per_patch * c.in_channels * d + c.depth * k * block_macs(d, c.mlp_ratio)
    dec = k * d * dd + c.decoder_depth * n * block_macs(dd, c.mlp_ratio) + n * dd * c.frames_per_patch * c.in_channels
    return 2 * bodies * (enc + dec)


@pytest.fixture(scope="module")
def paper_counts():
    """One "full" count per paper model (a full-size MAMP-5 forward is the slow part of this file)."""
    with torch_threads(1):
        x = one_action()
        out = {}
        for name, model in (("amr", AMR(AMRConfig())), ("mamp5", MAMP(MAMPConfig()))):
            table = flop_breakdown(model, x, "full")
            paper = sum(v for k, v in table.items() if not k.endswith(".attention"))
            out[name] = (model.config, paper, sum(table.values()))
        return out


def test_paper_numbers_amr_3_8g_and_mamp5_13_7g(paper_counts):
    cfg_a, f_amr, _ = paper_counts["amr"]
    cfg_m, f_mamp, _ = paper_counts["mamp5"]
    assert round(f_amr / 1e9, 1) == 3.8
    assert round(f_mamp / 1e9, 1) == 13.7
    assert f_amr == amr_paper_flops(cfg_a)
    assert f_mamp == mamp_paper_flops(cfg_m)
    assert round(mamp_paper_flops(MAMPConfig(decoder_depth=3)) / 1e9, 1) == 9.0     # MAMP-3


def test_paper_convention_equals_count_flops_paper():
    cfg = AMRConfig(num_frames=16, dim=32, depth=1, heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2, r=2,
                    windows=(4,), crop_min_frames=8)
    x = one_action(t=20)
    table = flop_breakdown(AMR(cfg), x, "full")
    assert count_flops(AMR(cfg), x) == sum(v for k, v in table.items() if not k.endswith(".attention"))


def test_mamp_count_matches_formula_at_small_size():
    cfg = MAMPConfig(num_frames=16, num_joints=13, dim=32, depth=2, heads=2, decoder_dim=16, decoder_depth=3,
                     decoder_heads=2, crop_min_frames=8)
    x = one_action(t=30, v=13)
    assert count_flops(MAMP(cfg), x) == mamp_paper_flops(cfg)


@pytest.mark.parametrize("cfg", [
    AMRConfig(num_frames=16, dim=32, depth=2, heads=2, decoder_dim=48, decoder_depth=2, decoder_heads=2, r=2,
              windows=(4,), crop_min_frames=8, head_hidden=20),
    AMRConfig(num_frames=24, num_joints=17, dim=16, depth=1, heads=2, decoder_dim=16, decoder_depth=3,
              decoder_heads=2, r=3, windows=(4,), crop_min_frames=8, mlp_ratio=2.0),
])
def test_amr_count_matches_formula_at_other_sizes(cfg):
    x = one_action(t=30, v=cfg.num_joints)
    assert count_flops(AMR(cfg), x) == amr_paper_flops(cfg)
    one_body = x.clone()
    one_body[..., 1] = 0                                     # empty bodies are skipped by default
    assert count_flops(AMR(cfg), one_body) == amr_paper_flops(cfg, bodies=1)


def test_full_convention_adds_attention_matmuls(paper_counts):
    cfg, paper, full = paper_counts["amr"]
    k, q, d, dd = cfg.num_visible, cfg.num_queries, cfg.dim, cfg.decoder_dim
    attn = 2 * (cfg.depth * 4 * k * k * d + cfg.decoder_depth * 4 * q * k * dd)   # 2 bodies
    assert full - paper == attn
    c, paper, full = paper_counts["mamp5"]
    extra = 2 * (c.depth * 4 * c.num_visible ** 2 * c.dim + c.decoder_depth * 4 * c.num_tokens ** 2 * c.decoder_dim)
    assert full - paper == extra
    assert round(full / 1e9, 1) == 19.5 and round(paper_counts["amr"][2] / 1e9, 1) == 4.0


def test_breakdown_and_encode():
    cfg = AMRConfig(num_frames=16, dim=32, depth=2, heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2, r=2,
                    windows=(4,), crop_min_frames=8)
    amr = AMR(cfg)
    x = one_action(t=20)
    table = flop_breakdown(amr, x, "full")
    assert sum(table.values()) == count_flops(amr, x, "full")
    assert "encoder.blocks.0.attn.attention" in table and "decoder.layers.0.attn.attention" in table
    assert table["encoder.patch_embed"] == 2 * 2 * cfg.num_visible * 12 * 32
    enc = count_flops(amr, x, method="encode")                 # all tokens, no decoder
    n = cfg.num_tokens
    assert enc == 2 * 2 * (n * 12 * 32 + cfg.depth * n * block_macs(32))


def test_counts_convolutions_and_linear_on_any_rank():
    net = nn.Sequential(nn.Conv2d(3, 8, (3, 1), padding=(1, 0)), nn.Conv2d(8, 8, 3, groups=4, padding=1),
                        nn.Flatten(2), nn.Linear(40, 5))
    x = torch.randn(2, 3, 4, 10)
    c1 = 2 * (2 * 8 * 4 * 10) * 3 * 3
    c2 = 2 * (2 * 8 * 4 * 10) * 2 * 9
    lin = 2 * (2 * 8) * 40 * 5
    assert count_flops(net, (x,)) == c1 + c2 + lin
    conv1d = nn.Conv1d(4, 6, 5)
    assert count_flops(conv1d, torch.randn(3, 4, 9)) == 2 * (3 * 6 * 5) * 4 * 5


def test_attention_modules_and_shared_queries():
    mha = MultiheadAttention(16, 2)
    x = torch.randn(3, 7, 16)
    linear = 2 * 3 * 7 * (16 * 48 + 16 * 16)
    assert count_flops(mha, x) == linear
    assert count_flops(mha, x, "full") == linear + 4 * 3 * 7 * 7 * 16
    mca = MultiheadCrossAttention(16, 2)
    q, ctx = torch.randn(1, 5, 16), torch.randn(3, 9, 16)      # shared queries: Bq = 1
    linear = 2 * (5 * 16 * 16 + 3 * 9 * 16 * 32 + 3 * 5 * 16 * 16)
    assert count_flops(mca, (q, ctx)) == linear
    assert count_flops(mca, (q, ctx), "full") == linear + 4 * 3 * 5 * 9 * 16
    dec = CrossAttentionDecoder(1, 4, 16, 1, 2, 6)
    # the first layer projects the 4 shared queries once, not once per sample
    assert flop_breakdown(dec, torch.randn(5, 3, 16))["layers.0.attn.q"] == 2 * 4 * 16 * 16


def test_bad_arguments():
    with pytest.raises(ValueError, match="convention"):
        count_flops(nn.Linear(2, 2), torch.randn(1, 2), convention="fvcore")
    with pytest.raises(TypeError, match="model"):
        count_flops(lambda x: x, torch.randn(1, 2))
    with pytest.raises(ValueError, match="method"):
        count_flops(nn.Linear(2, 2), torch.randn(1, 2), method="nope")
    with pytest.raises(TypeError, match="inputs"):
        count_flops(nn.Linear(2, 2), 3)
    lin = nn.Linear(2, 2)
    count_flops(lin, torch.randn(1, 2))
    assert not lin._forward_hooks                              # hooks removed


def test_official_slim_encoder_flops_one_action():
    """SLiM's official encoder (SwiGLU 688, cls slot): 5.19 / 2.60 G (Linear only, 2 / 1 bodies),
    5.88 / 2.94 G with attention; the paper's 3.59 G is neither."""
    from fastskel.methods.slim import SLiM, SLiMConfig

    m = SLiM(SLiMConfig(num_prototypes=16, head_hidden_dim=16)).eval()
    two, one = torch.randn(1, 3, 64, 25, 2), torch.randn(1, 3, 64, 25, 1)    # encode runs every body slot
    got = {(c, n): count_flops(m, (x,), convention=c, method="encode")
           for c in ("paper", "full") for n, x in ((2, two), (1, one))}
    assert got[("paper", 2)] == 5_190_778_880 and got[("paper", 1)] == 2_595_389_440
    assert got[("full", 2)] == 5_879_316_480 and got[("full", 1)] == 2_939_658_240
    assert all(abs(v / 1e9 - 3.59) > 0.5 for v in got.values())
