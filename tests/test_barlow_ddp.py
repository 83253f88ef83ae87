"""BarlowTwinsLoss under torch.distributed: two gloo processes on CPU.

The test runs this file as a script in a subprocess (bounded by a timeout); the script forks two
ranks that rendezvous through a FileStore in a temporary directory (no TCP port to pick or race
for). A rank still running after 120 s dumps its Python stacks to stderr, which the failure shows. Each rank projects its half of a global batch through a DDP-wrapped Linear and computes the
loss with ``distributed="auto"``. Checked against one process on the concatenated batch: the loss,
the embeddings' gradients (``world_size ×`` the single-process slice, see BarlowTwinsLoss) and the
DDP-averaged parameter gradients (equal to the single-process ones).
"""
import datetime
import gc
import os
import subprocess
import sys

import pytest
import torch

WORLD = 2
IN_DIM = 12
# (local batch, D, normalize): global batch 16 < D = 40 → Gram path; 2 × 20 = 40 ≥ D = 16 → materialised
CASES = [(8, 40, "batchnorm"), (8, 40, "cosine"), (20, 16, "batchnorm")]


def _global_views(b_local, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(WORLD * b_local, IN_DIM, generator=g)
    x1 = x + 0.3 * torch.randn(x.shape, generator=g)
    x2 = x + 0.3 * torch.randn(x.shape, generator=g)
    torch.manual_seed(seed)
    proj = torch.nn.Linear(IN_DIM, d)
    with torch.no_grad():
        proj.bias.add_(torch.randn(d, generator=g))  # non-zero feature means
    return x1, x2, proj


def _worker(rank, out_dir, store_file):
    import torch.distributed as dist
    import faulthandler

    faulthandler.dump_traceback_later(120, exit=True)  # a hang shows where, then fails
    torch.set_num_threads(1)
    print(f"rank {rank}: init", flush=True)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=90))  # a stuck collective fails, not hangs
    try:
        for i, (b, d, normalize) in enumerate(CASES):
            print(f"rank {rank}: case {i}", flush=True)
            _run_case(rank, i, b, d, normalize, out_dir)
        dist.barrier()  # no rank tears down the group while another still uses it
    finally:
        # DDP's reducer must die while the group lives: destroyed afterwards, it can hang the rank
        gc.collect()
        dist.destroy_process_group()


def _run_case(rank, i, b, d, normalize, out_dir):
    from torch.nn.parallel import DistributedDataParallel as DDP

    from fastskel.nn.losses import BarlowTwinsLoss

    x1, x2, proj = _global_views(b, d, seed=100 + i)
    model = DDP(proj)
    sl = slice(rank * b, (rank + 1) * b)
    z1, z2 = model(x1[sl]), model(x2[sl])
    z1.retain_grad()
    z2.retain_grad()
    loss = BarlowTwinsLoss(normalize=normalize)(z1, z2)
    loss.backward()
    local = BarlowTwinsLoss(normalize=normalize, distributed=False)(z1.detach(), z2.detach())
    torch.save(dict(loss=loss.detach(), local=local, g1=z1.grad, g2=z2.grad,
                    gw=proj.weight.grad, gb=proj.bias.grad),
               os.path.join(out_dir, f"case{i}_rank{rank}.pt"))


def _single_process(i, b, d, normalize):
    from fastskel.ops import barlow_twins_loss

    x1, x2, proj = _global_views(b, d, seed=100 + i)
    z1, z2 = proj(x1), proj(x2)
    z1.retain_grad()
    z2.retain_grad()
    loss = barlow_twins_loss(z1, z2, 2e-4, normalize)
    loss.backward()
    return loss.detach(), z1.grad, z2.grad, proj.weight.grad, proj.bias.grad


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is not available")
def test_distributed_loss_equals_single_process_on_global_batch(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    try:
        proc = subprocess.run([sys.executable, __file__, str(tmp_path)], env=env, capture_output=True, text=True,
                              timeout=240)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"distributed workers did not finish in 240 s:\n{e.stdout}\n{str(e.stderr)[-6000:]}")
    assert proc.returncode == 0, f"distributed workers failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    for i, (b, d, normalize) in enumerate(CASES):
        loss, g1, g2, gw, gb = _single_process(i, b, d, normalize)
        for rank in range(WORLD):
            r = torch.load(tmp_path / f"case{i}_rank{rank}.pt")
            sl = slice(rank * b, (rank + 1) * b)
            torch.testing.assert_close(r["loss"], loss, rtol=1e-5, atol=0.0)
            torch.testing.assert_close(r["g1"], WORLD * g1[sl], rtol=1e-4, atol=1e-4 * float(g1.abs().max()))
            torch.testing.assert_close(r["g2"], WORLD * g2[sl], rtol=1e-4, atol=1e-4 * float(g2.abs().max()))
            torch.testing.assert_close(r["gw"], gw, rtol=1e-4, atol=1e-4 * float(gw.abs().max()))
            torch.testing.assert_close(r["gb"], gb, rtol=1e-4, atol=1e-4 * float(gb.abs().max()) + 1e-7)
            # distributed=False: the rank's own batch only, so it differs from the global loss
            from fastskel.ops import reference

            x1, x2, proj = _global_views(b, d, seed=100 + i)
            with torch.no_grad():
                want_local = reference.barlow_twins_loss(proj(x1[sl]), proj(x2[sl]), 2e-4, normalize)
            torch.testing.assert_close(r["local"], want_local, rtol=1e-4, atol=0.0)
            assert not torch.allclose(r["local"], loss, rtol=1e-3)


if __name__ == "__main__":
    import torch.multiprocessing as mp

    out = sys.argv[1]
    # fork: the ranks inherit the imported torch/fastskel instead of importing them again
    mp.start_processes(_worker, args=(out, os.path.join(out, "store")), nprocs=WORLD, join=True,
                       start_method="fork")
