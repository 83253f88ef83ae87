"""Graphs as data: the built-in YAML layouts, rigs from files/mappings, plain-dict round trips."""
import json

import numpy as np
import pytest

from fastskel.graph import SkeletonGraph

# (name, V, center, edge count, a few (left, right) pairs from the public definitions)
LAYOUTS = [
    ("coco17", 17, 0, 16, [(5, 6), (15, 16), (1, 2)]),
    ("openpose25", 25, 1, 24, [(5, 2), (21, 24), (19, 22)]),
    ("mediapipe33", 33, 0, 39, [(11, 12), (31, 32), (7, 8)]),
    ("h36m17", 17, 0, 16, [(4, 1), (11, 14), (13, 16)]),
]


@pytest.mark.parametrize("name,V,center,n_edges,pairs", LAYOUTS)
def test_builtin_data_graphs(name, V, center, n_edges, pairs):
    g = SkeletonGraph.get(name)
    assert (g.name, g.V, g.center, len(g.edges)) == (name, V, center, n_edges)
    for p in pairs:
        assert p in g.lr_pairs
    # every joint is in exactly one part; the flip is an involution; trees have V-1 edges
    idx = g.part_index()
    assert (idx >= 0).all() and sum(len(p) for p in g.parts.values()) == V
    perm = np.array(g.flip_permutation())
    assert (perm[perm] == np.arange(V)).all()
    assert g.partition("spatial").shape == (3, V, V)
    assert SkeletonGraph.from_dict(g.to_dict()).to_dict() == g.to_dict()


def test_specific_edges_match_public_definitions():
    coco = SkeletonGraph.get("coco17")
    assert coco.parents[9] == 7 and coco.parents[7] == 5 and coco.parents[15] == 13  # wrist-elbow-shoulder
    body25 = SkeletonGraph.get("body25")
    assert body25.parents[24] == 11 and body25.parents[8] == 1  # RHeel-RAnkle, MidHip-Neck
    h36m = SkeletonGraph.get("h36m17")
    assert h36m.parents == (0, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)


def test_for_joints_new_builtins():
    assert SkeletonGraph.for_joints(17).name == "coco17"
    assert SkeletonGraph.for_joints(33).name == "mediapipe33"
    with pytest.raises(ValueError, match="--graph FILE"):
        SkeletonGraph.for_joints(16)


RIG16 = {"edges": [[0, 1], [1, 2], [2, 3], [1, 4], [4, 5], [5, 6], [1, 7], [7, 8], [8, 9],
                   [0, 10], [10, 11], [11, 12], [0, 13], [13, 14], [14, 15]], "center": 1}


def test_rig_from_yaml_and_json(tmp_path):
    import yaml

    y = tmp_path / "rig16.yaml"
    y.write_text(yaml.safe_dump(RIG16))
    g = SkeletonGraph.get(str(y))
    assert g.V == 16 and g.center == 1 and g.name == "rig16"
    # default parts: centre subtrees; no L/R pairs given -> none
    assert g.lr_pairs == ()
    assert sorted(j for p in g.parts.values() for j in p) == list(range(16))
    assert len(g.parts) >= 3
    j = tmp_path / "rig.json"
    j.write_text(json.dumps({**RIG16, "lr_pairs": [[4, 7]], "name": "r"}))
    assert SkeletonGraph.get(j.as_posix()).lr_pairs == ((4, 7),)
    assert SkeletonGraph.get({"edges": RIG16["edges"], "root": 0}).center == 0
    with pytest.warns(UserWarning, match="no lr_pairs"):
        assert g.flip_permutation() == tuple(range(16))


def test_rig_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="missing field 'edges'"):
        SkeletonGraph.from_dict({"center": 0})
    with pytest.raises(ValueError, match="missing field 'center'"):
        SkeletonGraph.from_dict({"edges": [[0, 1]]})
    with pytest.raises(ValueError, match="unknown field"):
        SkeletonGraph.from_dict({"edges": [[0, 1]], "center": 0, "centre": 0})
    with pytest.raises(ValueError, match=r"parts\.a"):
        SkeletonGraph.from_dict({"edges": [[0, 1]], "center": 0, "parts": {"a": [5]}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("edges: [[0, 1]\ncenter: 0\n")
    with pytest.raises(ValueError, match=r"bad\.yaml:\d+: invalid YAML"):
        SkeletonGraph.from_file(bad)
    with pytest.raises(ValueError, match="no such graph file"):
        SkeletonGraph.get("nope.yaml")


def test_graph_config_value_is_plain():
    from fastskel.engine.config import config_to_dict, graph_value
    from fastskel.methods.asma import ASMaConfig

    g = SkeletonGraph.from_dict(RIG16)
    d = graph_value(g)
    assert isinstance(d, dict) and d["edges"][0] == [0, 1]
    assert graph_value("coco17") == "coco17"
    cfg = ASMaConfig(num_joints=16, graph=g)
    assert isinstance(config_to_dict(cfg)["graph"], dict)
