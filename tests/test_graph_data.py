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


# ---- the published definitions, transcribed from the public sources cited in fastskel/graphs/*.yaml
# VideoPose3D common/h36m_dataset.py: 32-joint parents, the 15 removed joints, shoulders -> thorax
_H36M32_PARENTS = [-1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 12, 16, 17, 18, 19, 20, 19, 22, 12, 24,
                   25, 26, 27, 28, 27, 30]
_H36M32_LEFT, _H36M32_RIGHT = [6, 7, 8, 9, 10, 16, 17, 18, 19, 20, 21, 22, 23], [1, 2, 3, 4, 5, 24, 25, 26, 27, 28, 29, 30, 31]
_H36M_REMOVED = [4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31]
# PYSKL pyskl/utils/graph.py, layout 'coco' (inward pairs), center 0
_PYSKL_COCO = [(15, 13), (13, 11), (16, 14), (14, 12), (11, 5), (12, 6), (9, 7), (7, 5), (10, 8), (8, 6), (5, 0),
               (6, 0), (1, 0), (3, 1), (2, 0), (4, 2)]
_COCO_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
               "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
               "right_knee", "left_ankle", "right_ankle"]
# OpenPose include/openpose/pose/poseParametersRender.hpp, POSE_BODY_25_PAIRS_RENDER_GPU
_BODY25_PAIRS = [1, 8, 1, 2, 1, 5, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9, 10, 10, 11, 8, 12, 12, 13, 13, 14, 1, 0, 0, 15,
                 15, 17, 0, 16, 16, 18, 14, 19, 19, 20, 14, 21, 11, 22, 22, 23, 11, 24]
_BODY25_NAMES = ["Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip",
                 "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe",
                 "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel"]
# MediaPipe mediapipe/python/solutions/pose_connections.py, POSE_CONNECTIONS; PoseLandmark names
_MP_CONNECTIONS = [(0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13),
                   (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20),
                   (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28),
                   (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32)]
_MP_NAMES = ["nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
             "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
             "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
             "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
             "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
             "left_foot_index", "right_foot_index"]


def _undirected(pairs):
    return {frozenset(p) for p in pairs}


def _name_pairs(names, left, right):
    """Index pairs of names that differ only by their ``left``/``right`` marker."""
    idx = {n: i for i, n in enumerate(names)}
    return {frozenset((i, idx[n.replace(left, right, 1)])) for i, n in enumerate(names)
            if left in n and n.replace(left, right, 1) in idx}


def test_h36m17_is_videopose3d_reduced_skeleton():
    keep = [j for j in range(32) if j not in _H36M_REMOVED]
    new = {old: i for i, old in enumerate(keep)}
    parents = []
    for old in keep:  # VideoPose3D's remove_joints: walk up to the nearest kept ancestor
        p = _H36M32_PARENTS[old]
        while p != -1 and p not in new:
            p = _H36M32_PARENTS[p]
        parents.append(new[p] if p != -1 else -1)
    parents[11] = parents[14] = 8  # "Rewire shoulders to the correct parents"
    g = SkeletonGraph.get("h36m17")
    assert parents == [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15]
    assert [(-1 if j == g.center else p) for j, p in enumerate(g.parents)] == parents
    left = [new[j] for j in _H36M32_LEFT if j in new]
    right = [new[j] for j in _H36M32_RIGHT if j in new]
    assert sorted(g.lr_pairs) == sorted(zip(left, right))


def test_coco17_is_pyskl_coco_layout_with_mmpose_swaps():
    g = SkeletonGraph.get("coco17")
    assert g.center == 0 and _undirected(g.edges) == _undirected(_PYSKL_COCO)
    assert _undirected(g.lr_pairs) == _name_pairs(_COCO_NAMES, "left_", "right_")


def test_openpose25_is_body25_render_pairs():
    g = SkeletonGraph.get("openpose25")
    pairs = list(zip(_BODY25_PAIRS[::2], _BODY25_PAIRS[1::2]))
    assert _undirected(g.edges) == _undirected(pairs) and g.center == 1
    lr = {p for p in _name_pairs([n[0] + "_" + n[1:] for n in _BODY25_NAMES], "L_", "R_")}
    assert _undirected(g.lr_pairs) == lr and len(lr) == 11


def test_mediapipe33_is_pose_connections_plus_documented_links():
    g = SkeletonGraph.get("mediapipe33")
    extra = _undirected(g.edges) - _undirected(_MP_CONNECTIONS)
    assert _undirected(_MP_CONNECTIONS) <= _undirected(g.edges)
    assert extra == _undirected([(0, 9), (0, 10), (0, 11), (0, 12)])  # the links the YAML documents
    lr = _name_pairs(_MP_NAMES, "left", "right")  # left_eye_inner/right_eye_inner, ..., mouth_left/mouth_right
    assert _undirected(g.lr_pairs) == lr and len(lr) == 16
