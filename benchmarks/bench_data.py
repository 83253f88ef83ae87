"""Data benchmarks: NTU .skeleton parse throughput (C++ parser vs the Python fallback) and the batched
MAMP crop-resize vs the per-sample reference loop.

Parse throughput in files/s = ``extra_info["files"] / median``. Inputs are generated NTU-format
files of NTU's typical size (100 frames, 2 bodies, 25 joints -> ~5,200 lines each).
``FASTSKEL_BENCH_SMALL=1``: 4 short files, tiny batches (CI smoke).
"""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastskel import _ext

SMALL = os.environ.get("FASTSKEL_BENCH_SMALL") == "1"
NUM_FILES = 4 if SMALL else 64
FRAMES = 10 if SMALL else 100
HAS_PARSER = _ext.load() is not None and hasattr(_ext.load(), "read_ntu_skeletons")


@pytest.fixture(scope="module")
def ntu_files(tmp_path_factory):
    from fastskel.data.ntu import write_ntu_skeleton

    d = tmp_path_factory.mktemp("ntu_raw")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(NUM_FILES):
        base = rng.normal(size=(2, 25, 3)) * 0.3 + np.array([0.0, 0.0, 3.0])
        frames = [[(72057594037931100 + b, base[b] + 0.01 * t * rng.normal(size=(25, 3))) for b in range(2)]
                  for t in range(FRAMES)]
        p = d / f"S001C001P{i % 40 + 1:03d}R001A{i % 60 + 1:03d}.skeleton"
        write_ntu_skeleton(str(p), frames, fmt="%.8f")
        paths.append(str(p))
    return paths


def _info(benchmark, backend, threads, paths):
    benchmark.extra_info.update({
        "what": "NTU .skeleton parse + body selection", "backend": backend, "threads": threads,
        "files": len(paths), "frames_per_file": FRAMES, "bodies": 2, "joints": 25, "dtype": "float32",
        "device": "cpu", "cpu_count": os.cpu_count(),
    })


def test_parse_ntu_python(benchmark, ntu_files):
    from fastskel.data.ntu import read_ntu_skeletons

    _info(benchmark, "python", 1, ntu_files)
    out = benchmark(read_ntu_skeletons, ntu_files, backend="python")
    assert len(out) == len(ntu_files) and out[0].shape == (3, FRAMES, 25, 2)


@pytest.mark.skipif(not HAS_PARSER, reason="fastskel._C has no read_ntu_skeletons")
@pytest.mark.parametrize("threads", [1, 0], ids=["1thread", "allthreads"])
def test_parse_ntu_cpp(benchmark, ntu_files, threads):
    from fastskel.data.ntu import read_ntu_skeletons

    n = threads or (os.cpu_count() or 1)
    _info(benchmark, "cpp", n, ntu_files)
    out = benchmark(read_ntu_skeletons, ntu_files, backend="cpp", num_threads=n)
    ref = read_ntu_skeletons(ntu_files[:2], backend="python")
    assert all(np.array_equal(a, b) for a, b in zip(out, ref))


# ----------------------------------------------------------------------------------------- crop-resize
B, T_RAW, SIZE = (4, 40, 16) if SMALL else (128, 300, 120)  # MAMP: batch 128, NTU 300 frames -> 120


@pytest.fixture(scope="module")
def raw_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, 3, T_RAW, 25, 2, generator=g)
    lengths = torch.randint(T_RAW // 3, T_RAW + 1, (B,), generator=g)
    x = x * (torch.arange(T_RAW)[None] < lengths[:, None]).float()[:, None, :, None, None]
    return x, lengths


def _crop_info(benchmark, impl):
    benchmark.extra_info.update({"what": "MAMP valid_crop_resize", "impl": impl, "shape": [B, 3, T_RAW, 25, 2],
                                 "size": SIZE, "dtype": "float32", "device": "cpu"})


def test_crop_resize_reference_loop(benchmark, raw_batch):
    """The MAMP feeder's per-sample path: slice, then F.interpolate(bilinear) each sample."""
    from fastskel.data.transforms import crop_resize

    x, L = raw_batch
    _, (start, length) = crop_resize(x, L, size=SIZE, min_frames=min(64, T_RAW // 3), return_window=True,
                                     generator=torch.Generator().manual_seed(1))

    def loop():
        outs = []
        for i in range(B):
            w = x[i, :, int(start[i]): int(start[i]) + int(length[i])]
            C, Tw, V, M = w.shape
            w = w.permute(0, 2, 3, 1).reshape(1, 1, C * V * M, Tw)
            outs.append(F.interpolate(w, size=(C * V * M, SIZE), mode="bilinear", align_corners=False)
                        .reshape(C, V, M, SIZE).permute(0, 3, 1, 2))
        return torch.stack(outs)

    _crop_info(benchmark, "per-sample F.interpolate loop")
    assert benchmark(loop).shape == (B, 3, SIZE, 25, 2)


def test_crop_resize_batched(benchmark, raw_batch):
    from fastskel.data.transforms import crop_resize

    x, L = raw_batch
    _crop_info(benchmark, "fastskel.data.transforms.crop_resize (batched gather)")
    g = torch.Generator().manual_seed(1)
    out = benchmark(crop_resize, x, L, size=SIZE, min_frames=min(64, T_RAW // 3), generator=g)
    assert out.shape == (B, 3, SIZE, 25, 2)
