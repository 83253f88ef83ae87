"""SkeletonGraph: NTU-25 exactly as st-gcn, other topologies, custom rigs, bad input."""
import numpy as np
import pytest
import torch

from fastskel.graph import SkeletonGraph

NTU_DEGREES = [3, 2, 2, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 1, 4, 1, 2, 1, 2]


def test_ntu25_structure():
    g = SkeletonGraph.ntu25()
    assert g.V == 25 and g.center == 20 and len(g.edges) == 24
    assert g.degrees.tolist() == NTU_DEGREES
    assert g.lr_pairs[0] == (4, 8) and len(g.lr_pairs) == 10
    assert sorted(j for p in g.parts.values() for j in p) == list(range(25))
    assert g.parts["left_arm"] == (4, 5, 6, 7, 21, 22)


def test_ntu25_parents_are_the_bone_list():
    # 2s-AGCN / CTR-GCN ntu_pairs (1-based (joint, parent)), with the centre its own parent.
    ntu_pairs = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
                 (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
                 (20, 19), (21, 21), (22, 23), (23, 8), (24, 25), (25, 12)]
    assert SkeletonGraph.ntu25().parents == tuple(p - 1 for _, p in ntu_pairs)


def test_ntu25_spatial_partition_pinned():
    g = SkeletonGraph.ntu25()
    A = g.partition("spatial")
    assert A.shape == (3, 25, 25) and A.dtype == torch.float32
    assert [(a != 0).sum().item() for a in A] == [25, 40, 8]
    torch.testing.assert_close(A.sum(0).sum(0), torch.ones(25))
    deg = torch.tensor(NTU_DEGREES, dtype=torch.float32)
    torch.testing.assert_close(torch.diagonal(A[0]), 1.0 / (deg + 1))
    # the "further" subset: messages from the centre to its 4 neighbours and from those to theirs
    rows, cols = torch.nonzero(A[2], as_tuple=True)
    pairs = set(zip(rows.tolist(), cols.tolist()))
    assert {(20, 1), (20, 2), (20, 4), (20, 8), (1, 0), (2, 3), (4, 5), (8, 9)} == pairs


def test_other_strategies():
    g = SkeletonGraph.ntu25()
    u = g.partition("uniform")
    d = g.partition("distance")
    assert u.shape == (1, 25, 25) and d.shape == (2, 25, 25)
    torch.testing.assert_close(d.sum(0), u[0])
    torch.testing.assert_close(u[0].sum(0), torch.ones(25))
    assert (d[0] != 0).sum() == 25 and (d[1] != 0).sum() == 48


def test_openpose18_and_custom():
    op = SkeletonGraph.openpose18()
    assert op.V == 18 and op.partition().shape == (3, 18, 18)
    torch.testing.assert_close(op.partition().sum(0).sum(0), torch.ones(18))
    chain = SkeletonGraph([(0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6)], center=1)
    assert chain.V == 7
    assert chain.degrees.tolist() == [1, 3, 2, 2, 1, 2, 1]
    assert chain.parents == (1, 1, 1, 2, 3, 1, 5)
    assert SkeletonGraph.get("openpose").V == 18 and SkeletonGraph.for_joints(25).name == "ntu25"


def test_flip_permutation_is_involution():
    for g in (SkeletonGraph.ntu25(), SkeletonGraph.openpose18()):
        perm = np.array(g.flip_permutation())
        assert (perm[perm] == np.arange(g.V)).all()
        assert sum(perm != np.arange(g.V)) == 2 * len(g.lr_pairs)


def test_part_index():
    g = SkeletonGraph.ntu25()
    idx = g.part_index()
    assert idx[20] == 0 and idx[7] == 1 and idx[11] == 2 and idx[15] == 3 and idx[19] == 4


@pytest.mark.parametrize("kwargs,match", [
    (dict(edges=[], center=0), "edges"),
    (dict(edges=[(0, 0)], center=0), "edges"),
    (dict(edges=[(0, 1)], center=5), "center"),
    (dict(edges=[(0, 1), (2, 3)], center=0), "not connected"),
])
def test_bad_graphs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SkeletonGraph(**kwargs)


def test_bad_lookups():
    with pytest.raises(ValueError, match="strategy"):
        SkeletonGraph.ntu25().partition("nope")
    with pytest.raises(ValueError, match="graph"):
        SkeletonGraph.get("kinect99")
    with pytest.raises(ValueError, match="V=16"):
        SkeletonGraph.for_joints(16)  # 17 is COCO-17 now
    with pytest.raises(ValueError, match="expected V=25 joints"):
        SkeletonGraph.ntu25().check_num_joints(18)
