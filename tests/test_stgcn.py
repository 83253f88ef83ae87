"""fastskel.nn.GraphConv and fastskel.nn.STGCN: st-gcn compatibility, parameter counts, features, export."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastskel.graph import SkeletonGraph
from fastskel.nn.graph_conv import GraphConv
from fastskel.nn.stgcn import STGCN, stgcn_schedule
from conftest import DEVICES, HAS_C

BACKENDS = ["torch"] + (["cpp"] if HAS_C else [])


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------- st-gcn, written as in its paper code
class _CTG(nn.Module):  # ConvTemporalGraphical
    def __init__(self, cin, cout, k, t_kernel_size=1, t_padding=0):
        super().__init__()
        self.kernel_size = k
        self.conv = nn.Conv2d(cin, cout * k, (t_kernel_size, 1), padding=(t_padding, 0))

    def forward(self, x, A):
        x = self.conv(x)
        n, kc, t, v = x.size()
        return torch.einsum("nkctv,kvw->nctw", x.view(n, self.kernel_size, kc // self.kernel_size, t, v), A), A


class _Unit(nn.Module):  # st_gcn
    def __init__(self, cin, cout, k, stride, residual):
        super().__init__()
        self.gcn = _CTG(cin, cout, k)
        self.tcn = nn.Sequential(nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, cout, (9, 1), (stride, 1), (4, 0)),
                                 nn.BatchNorm2d(cout), nn.Dropout(0.0))
        self.mode = "none" if not residual else ("id" if cin == cout and stride == 1 else "conv")
        if self.mode == "conv":
            self.residual = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=(stride, 1)), nn.BatchNorm2d(cout))

    def forward(self, x, A):
        res = 0 if self.mode == "none" else (x if self.mode == "id" else self.residual(x))
        y, _ = self.gcn(x, A)
        return F.relu(self.tcn(y) + res), A


class _Original(nn.Module):  # st-gcn Model / PSTL encoder without the classifier
    def __init__(self, hidden, out_dim, A):
        super().__init__()
        self.register_buffer("A", A)
        K, V = A.shape[:2]
        self.data_bn = nn.BatchNorm1d(3 * V)
        h = hidden
        cfg = [(3, h, 1), (h, h, 1), (h, h, 1), (h, h, 1), (h, 2 * h, 2), (2 * h, 2 * h, 1), (2 * h, 2 * h, 1),
               (2 * h, 4 * h, 2), (4 * h, 4 * h, 1), (4 * h, out_dim, 1)]
        self.st_gcn_networks = nn.ModuleList(_Unit(i, o, K, s, idx > 0) for idx, (i, o, s) in enumerate(cfg))
        self.edge_importance = nn.ParameterList(nn.Parameter(torch.ones(A.shape)) for _ in cfg)

    def forward(self, x):
        N, C, T, V, M = x.size()
        x = x.permute(0, 4, 3, 1, 2).contiguous().view(N * M, V * C, T)
        x = self.data_bn(x)
        x = x.view(N, M, V, C, T).permute(0, 1, 3, 4, 2).contiguous().view(N * M, C, T, V)
        for gcn, imp in zip(self.st_gcn_networks, self.edge_importance):
            x, _ = gcn(x, self.A * imp)
        x = F.avg_pool2d(x, x.size()[2:])
        return x.view(N, M, -1).mean(dim=1)


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and name != "A":
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75 if "running_var" in name or "importance" in name
                        else torch.randn(t.shape, generator=g) * 0.2)


# --------------------------------------------------------------------------- parameter counts / layout
def test_parameter_counts_match_originals():
    assert n_params(STGCN(hidden_channels=16, out_dim=256)) == 821_380       # PSTL / ASMa encoder
    assert n_params(STGCN(hidden_channels=64, out_dim=256)) == 3_083_412     # st-gcn NTU trunk (no fcn)
    A = SkeletonGraph.ntu25().partition("spatial")
    assert n_params(_Original(16, 256, A)) == 821_380
    assert n_params(_Original(64, 256, A)) == 3_083_412


def test_schedule():
    assert stgcn_schedule(16, 256, 10) == ([16, 16, 16, 16, 32, 32, 32, 64, 64, 256], [1, 1, 1, 1, 2, 1, 1, 2, 1, 1])
    assert stgcn_schedule(16, 256, 5) == ([16, 16, 32, 64, 256], [1, 1, 2, 2, 1])
    chans, strides = stgcn_schedule(8, 32, 12)
    assert len(chans) == 12 and chans[-1] == 32 and strides.count(2) == 2
    m = STGCN(hidden_channels=4, out_dim=12, channels=[4, 8, 12], strides=[1, 2, 1])
    assert [b.gcn.conv.out_channels // 3 for b in m.st_gcn_networks] == [4, 8, 12] and m.strides == (1, 2, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_loads_original_checkpoint_and_matches(backend):
    A = SkeletonGraph.ntu25().partition("spatial")
    orig = _Original(8, 24, A).eval()
    _randomize(orig)
    ours = STGCN(hidden_channels=8, out_dim=24, dropout=0.0, backend=backend).eval()
    ours.load_state_dict(orig.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(orig.state_dict())
    x = torch.randn(2, 3, 12, 25, 2)
    torch.testing.assert_close(ours(x), orig(x), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- GraphConv
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cin,cout,v,k", [(3, 8, 25, 3), (7, 5, 18, 2)])
def test_graph_conv_module_matches_conv_temporal_graphical(backend, cin, cout, v, k):
    ref = _CTG(cin, cout, k)
    ours = GraphConv(cin, cout, k, backend=backend)
    ours.load_state_dict(ref.state_dict())
    assert ours.conv.weight.shape == (k * cout, cin, 1, 1)
    x = torch.randn(2, cin, 6, v, requires_grad=True)
    A = torch.rand(k, v, v, requires_grad=True)
    outs = []
    for m in (ref, ours):
        y, a_out = m(x, A)
        assert a_out is A
        grads = torch.autograd.grad(y.square().sum(), [x, A, *m.parameters()])
        outs.append((y, *grads))
    for r, o in zip(*outs):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5 * max(1.0, r.abs().max().item()))


def test_graph_conv_temporal_kernel_path():
    ref = _CTG(4, 6, 3, t_kernel_size=3, t_padding=1)
    ours = GraphConv(4, 6, 3, t_kernel_size=3, t_padding=1)
    ours.load_state_dict(ref.state_dict())
    x, A = torch.randn(2, 4, 5, 9), torch.rand(3, 9, 9)
    torch.testing.assert_close(ours(x, A)[0], ref(x, A)[0])


def test_graph_conv_autocast_cpu_bf16():
    torch.manual_seed(0)
    m = GraphConv(3, 8, 3)
    x, A = torch.randn(2, 3, 4, 25), torch.rand(3, 25, 25)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = m(x, A)
    assert y.dtype == torch.bfloat16
    want = m(x, A)[0]
    # bf16 keeps 8 mantissa bits: inputs, weights and the output each round to ~2^-9 relative, so an
    # element near zero (a sum of 75 terms of both signs) can be off by ~1% of the output's scale
    torch.testing.assert_close(y.float(), want, rtol=2e-2, atol=2e-2 * float(want.abs().max()))


def test_graph_conv_errors():
    with pytest.raises(ValueError, match="out_channels"):
        GraphConv(3, 0, 3)
    with pytest.raises(ValueError, match="A: expected shape"):
        GraphConv(3, 8, 3)(torch.randn(1, 3, 4, 25), torch.rand(2, 25, 25))


# --------------------------------------------------------------------------- STGCN forward / features
@pytest.mark.parametrize("device", DEVICES)
def test_stgcn_shapes_and_sequence_features(device):
    m = STGCN(hidden_channels=4, out_dim=16).to(device).eval()
    x = torch.randn(3, 3, 50, 25, 2, device=device)
    z = m(x)
    seq = m(x, return_sequence=True)
    assert z.shape == (3, 16) and seq.shape == (3, 13, 16)
    torch.testing.assert_close(seq.mean(dim=1), z, rtol=1e-5, atol=1e-6)
    # (N, C, T, V) is one body
    torch.testing.assert_close(m(x[..., 0]), m(x[..., :1]))


def test_stgcn_other_graph_and_depth():
    g = SkeletonGraph.openpose18()
    m = STGCN(hidden_channels=4, out_dim=8, depth=5, graph=g, edge_importance=False).eval()
    assert m.edge_importance is None and len(m.st_gcn_networks) == 5
    assert m(torch.randn(2, 3, 20, 18, 1), return_sequence=True).shape == (2, 5, 8)


@pytest.mark.skipif(not HAS_C, reason="fastskel._C not built")
def test_stgcn_cpp_and_torch_backends_agree_in_training():
    x = torch.randn(2, 3, 10, 25, 2)
    res = []
    for backend in ("torch", "cpp"):
        torch.manual_seed(0)
        m = STGCN(hidden_channels=4, out_dim=16, dropout=0.0, backend=backend).train()
        loss = m(x).square().sum()
        loss.backward()
        res.append((loss.detach(), m.edge_importance[3].grad, m.st_gcn_networks[5].gcn.conv.weight.grad,
                    m.st_gcn_networks[0].gcn.conv.bias.grad, m.data_bn.weight.grad))
    for r, c in zip(*res):
        torch.testing.assert_close(c, r, rtol=1e-4, atol=1e-5 * max(1.0, r.abs().max().item()))


def test_stgcn_errors():
    m = STGCN(hidden_channels=4, out_dim=8)
    with pytest.raises(ValueError, match="V=25"):
        m(torch.randn(1, 3, 8, 18, 1))
    with pytest.raises(ValueError, match="C=3"):
        m(torch.randn(1, 2, 8, 25, 1))
    with pytest.raises(ValueError, match="x: expected"):
        m(torch.randn(3, 8, 25))
    with pytest.raises(ValueError, match="hidden_channels"):
        STGCN(hidden_channels=0)
    with pytest.raises(ValueError, match="strides"):
        STGCN(channels=[4, 8], strides=[1])


# --------------------------------------------------------------------------- export
def test_onnx_export_matches_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    m = STGCN(hidden_channels=4, out_dim=8, depth=3).eval()
    _randomize(m, seed=1)
    x = torch.randn(2, 3, 12, 25, 2)
    path = tmp_path / "stgcn.onnx"
    # the exporter traces GraphConv's Conv2d + einsum formulation, not the custom op
    torch.onnx.export(m, (x,), str(path), dynamo=True, input_names=["x"], output_names=["z"], external_data=False,
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    x5 = torch.randn(5, 3, 12, 25, 2)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x5.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), m(x5).detach(), rtol=1e-4, atol=1e-5)
