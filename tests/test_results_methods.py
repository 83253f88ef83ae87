"""MAMP's linear-probe pooling (``encode_bodies="all"``) and the lazy ``fastskel.methods`` exports."""
import subprocess
import sys

import pytest
import torch

from fastskel.methods.amr import MAMP, MAMPConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(num_frames=16, frames_per_patch=4, dim=32, depth=2, heads=2, decoder_dim=32, decoder_depth=2,
            decoder_heads=2, crop_min_frames=8)


def _batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 20, 25, 2, generator=g)
    x[0, ..., 1] = 0                         # one-person actions with an all-zero second body
    x[2, ..., 1] = 0
    return x, torch.tensor([20, 17, 12])


def test_encode_bodies_all_is_the_mean_over_every_body_including_an_empty_one():
    torch.manual_seed(0)
    valid = MAMP(MAMPConfig(**TINY)).eval()
    every = MAMP(MAMPConfig(**TINY, encode_bodies="all")).eval()
    every.load_state_dict(valid.state_dict())
    x, L = _batch()
    with torch.no_grad():
        f_all, f_valid = every.encode(x, L), valid.encode(x, L)
        per_body = [every.encode(x[..., m:m + 1].contiguous(), L) for m in range(2)]   # one body at a time
    # MAMP's ActionHeadLinprobe: feature.mean over (M, T, V) = mean over bodies of each body's token mean
    torch.testing.assert_close(f_all, (per_body[0] + per_body[1]) / 2, atol=1e-5, rtol=1e-5)
    # two real bodies: both poolings agree; one person + a zero body: "valid" ignores the zero body
    torch.testing.assert_close(f_all[1], f_valid[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(f_valid[0], per_body[0][0], atol=1e-5, rtol=1e-5)
    assert (f_all[0] - f_valid[0]).abs().max() > 1e-3        # the empty body's feature is not zero
    assert MAMPConfig().encode_bodies == "valid"
    with pytest.raises(ValueError, match="encode_bodies"):
        MAMPConfig(**TINY, encode_bodies="some")


def test_methods_package_exports_every_method_lazily():
    code = (
        "import sys, fastskel.methods as m\n"
        "assert not any(k in sys.modules for k in ('fastskel.methods.amr', 'fastskel.methods.asma', "
        "'fastskel.methods.slim')), sorted(k for k in sys.modules if k.startswith('fastskel.methods.'))\n"
        "from fastskel.methods import AMR, AMRConfig, MAMP, MAMPConfig, ASMa, ASMaConfig, SLiM, SLiMConfig, "
        "Supervised, SupervisedConfig\n"
        "assert 'fastskel.methods.amr' in sys.modules and AMR.__name__ == 'AMR' and SLiM.__name__ == 'SLiM'\n"
        "assert set(['AMR', 'ASMa', 'SLiM', 'MAMP']) <= set(dir(m)) and set(['AMR', 'SLiM']) <= set(m.__all__)\n"
        "try:\n    m.Nope\nexcept AttributeError as e:\n    assert 'Nope' in str(e)\nelse:\n    raise SystemExit(1)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
