"""Own skeletons end to end from the CLI: a 16-joint rig given only by a YAML graph file (in a
CTR-GCN .npz and a PYSKL .pkl), COCO-17 2-D + score data, a Python-trained custom-graph checkpoint,
and honest st-gcn splits. Tiny sizes: each command runs in about a second."""
import pickle

import numpy as np
import pytest
import torch
import yaml

from fastskel.cli import main
from fastskel.data import SyntheticSkeletons
from fastskel.data.formats import write_ctrgcn_npz

RIG16 = {"edges": [[0, 1], [1, 2], [2, 3], [1, 4], [4, 5], [5, 6], [1, 7], [7, 8], [8, 9],
                   [0, 10], [10, 11], [11, 12], [0, 13], [13, 14], [14, 15]], "center": 1,
         "lr_pairs": [[4, 7], [5, 8], [6, 9], [10, 13], [11, 14], [12, 15]]}

TINY = {
    "asma": dict(num_frames=8, hidden_channels=4, depth=1, out_dim=8, projector_dims="[16]", joint_mask_n=2,
                 frame_mask_k=2, pad=2, warmup_epochs=0),
    "slim": dict(frames=8, local_frames="[8]", local_scales="[[0.3, 0.6]]", local_crops=1, frames_per_patch=4,
                 dim=16, depth=1, heads=2, mlp_dim=16, num_registers=1, num_prototypes=16, head_hidden_dim=16,
                 head_bottleneck_dim=8, warmup_epochs=0, warmup_teacher_temp_epochs=0),
    "amr": dict(num_frames=8, frames_per_patch=4, r=1, dim=16, depth=1, heads=2, decoder_dim=16, decoder_depth=1,
                decoder_heads=2, crop_min_frames=4, mask_ratio=0.5),
    "mamp": dict(num_frames=8, frames_per_patch=4, dim=16, depth=1, heads=2, decoder_dim=16, decoder_depth=1,
                 decoder_heads=2, crop_min_frames=4, mask_ratio=0.5),
    "supervised": dict(backbone="stgcn", hidden=4, depth=1, out_dim=8, kernel=3),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _sets(method):
    import dataclasses

    from fastskel.methods import get_method

    fields = {f.name for f in dataclasses.fields(get_method(method)[1])}
    return [a for k, v in TINY[method].items() if k in fields for a in ("--set", f"{k}={v}")]


def _write_pyskl(path, tr, te, channels):
    anns, split = [], {"train": [], "val": []}
    for part, d in (("train", tr), ("val", te)):
        for i in range(len(d)):
            x = d.x[i].numpy().transpose(3, 1, 2, 0)  # (M, T, V, C)
            a = {"frame_dir": f"{part}{i}", "label": int(d.y[i]), "total_frames": int(d.lengths[i])}
            if channels == "xy+score":
                a.update(keypoint=x[..., :2].copy(), keypoint_score=x[..., 2].copy())
            else:
                a["keypoint"] = x
            anns.append(a)
            split[part].append(a["frame_dir"])
    with open(path, "wb") as f:
        pickle.dump({"split": split, "annotations": anns}, f)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    gfile = root / "rig16.yaml"
    gfile.write_text(yaml.safe_dump(RIG16))
    out = {"graph": gfile}
    for key, kw in (("rig", dict(graph=str(gfile))), ("coco", dict(graph="coco17", channels="xy+score"))):
        common = dict(num_classes=2, num_samples=16, T=8, bodies=2, **kw)
        tr, te = SyntheticSkeletons(split="train", **common), SyntheticSkeletons(split="test", **common)
        write_ctrgcn_npz(str(root / f"{key}.npz"), tr, te)
        _write_pyskl(root / f"{key}.pkl", tr, te, kw.get("channels", "xyz"))
        out[key + "_npz"], out[key + "_pkl"] = root / f"{key}.npz", root / f"{key}.pkl"
    return out


def _pretrain_eval_export(method, data, tmp, graph_args):
    run = tmp / method
    assert main(["pretrain", method, "--data", str(data), *graph_args, "--epochs", "1", "--batch-size", "4",
                 *_sets(method), "--no-progress", "--device", "cpu", "--out", str(run)]) == 0
    ck = torch.load(run / "last.pt", weights_only=True)  # plain data only
    assert ck["config"]["num_joints"] == (16 if "rig" in str(data) else 17)
    assert main(["eval", "knn", "--checkpoint", str(run / "last.pt"), "--data", str(data), "--k", "3"]) == 0
    assert main(["eval", "linear", "--checkpoint", str(run / "last.pt"), "--data", str(data), "--epochs", "2",
                 "--out", str(run)]) == 0
    assert main(["export", "--checkpoint", str(run / "linear.pt"), "--formats", "torchscript", "--runs", "1",
                 "--out", str(run / "export")]) == 0
    return ck


@pytest.mark.parametrize("method", ["asma", "slim", "amr", "mamp", "supervised"])
def test_rig16_yaml_graph_npz(datasets, tmp_path, method):
    ck = _pretrain_eval_export(method, datasets["rig_npz"], tmp_path, ["--graph", str(datasets["graph"])])
    g = ck["config"]["graph"]
    assert isinstance(g, dict) and g["edges"] == RIG16["edges"] and g["center"] == 1


@pytest.mark.parametrize("method", ["asma", "amr"])
def test_rig16_yaml_graph_pyskl(datasets, tmp_path, method):
    _pretrain_eval_export(method, datasets["rig_pkl"], tmp_path, ["--set", f"graph={datasets['graph']}"])


@pytest.mark.parametrize("method", ["asma", "slim", "supervised"])
def test_coco17_xy_score(datasets, tmp_path, method):
    ck = _pretrain_eval_export(method, datasets["coco_pkl"], tmp_path, [])
    assert ck["config"]["graph"] == "coco17" and ck["config"]["in_channels"] == 3


def test_python_custom_graph_checkpoint_evaluates_from_cli(datasets, tmp_path):
    from fastskel.engine.evaluate import load_method
    from fastskel.engine.trainer import TrainOptions, Trainer
    from fastskel.graph import SkeletonGraph
    from fastskel.methods.asma import ASMa, ASMaConfig

    g = SkeletonGraph.from_dict(RIG16)
    fields = set(ASMaConfig.__dataclass_fields__)
    small = {k: v for k, v in TINY["asma"].items() if k != "projector_dims" and k in fields}
    cfg = ASMaConfig(num_joints=16, graph=g, epochs=1, batch_size=4, projector_dims=(16,), **small)
    ds = SyntheticSkeletons(num_classes=2, num_samples=12, T=8, bodies=1, graph=g, split="train")
    res = Trainer(ASMa(cfg), ds, TrainOptions(out=str(tmp_path), device="cpu", progress=False),
                  method_name="asma").fit()
    method, _ = load_method(res.checkpoint)
    assert method.graph.V == 16
    data = str(datasets["rig_npz"])
    assert main(["eval", "linear", "--checkpoint", str(res.checkpoint), "--data", data, "--epochs", "2",
                 "--out", str(tmp_path)]) == 0
    assert main(["export", "--checkpoint", str(tmp_path / "linear.pt"), "--formats", "torchscript", "--runs", "1",
                 "--out", str(tmp_path / "export")]) == 0


def test_stgcn_layout_uses_validation_file_and_refuses_training_file(tmp_path, capsys):
    common = dict(num_classes=2, num_samples=16, T=8, bodies=1)
    for part, split in (("train", "train"), ("val", "test")):
        d = SyntheticSkeletons(split=split, **common)
        np.save(tmp_path / f"{part}_data_joint.npy", d.x.numpy())
        with open(tmp_path / f"{part}_label.pkl", "wb") as f:
            pickle.dump(([f"{part}{i}" for i in range(len(d))], d.y.tolist()), f)
    tr = str(tmp_path / "train_data_joint.npy")
    base = ["eval", "knn", "--method", "supervised", "--set", "backbone=tiny", "--set", "hidden=4", "--set",
            "depth=1", "--data", tr, "--k", "3"]
    assert main(base) == 0
    assert "(12 train / 4 test samples" in capsys.readouterr().out.replace("  ", " ")
    assert main(base + ["--test-data", tr]) == 2
    assert "training file" in capsys.readouterr().err
    (tmp_path / "val_data_joint.npy").unlink()
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "--test-data" in err and "training set" in err


@pytest.mark.parametrize("method", ["asma", "slim"])
def test_synthetic_coco17_xy(tmp_path, method):
    data = "synthetic:graph=coco17,channels=xy,num_samples=12,T=8,num_classes=2,bodies=1"
    assert main(["pretrain", method, "--data", data, "--epochs", "1", "--batch-size", "4", *_sets(method),
                 "--no-progress", "--device", "cpu", "--out", str(tmp_path)]) == 0
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ck["config"]["in_channels"] == 2 and ck["config"]["graph"] == "coco17"


def test_synthetic_channels():
    common = dict(num_classes=2, num_samples=8, T=6, bodies=1, graph="mediapipe33")
    xy = SyntheticSkeletons(channels="xy", **common)
    xys = SyntheticSkeletons(channels="xy+score", **common)
    assert xy.x.shape[1:] == (2, 6, 33, 1) and xys.x.shape[1] == 3
    torch.testing.assert_close(xys.x[:, :2], xy.x)
    valid = torch.arange(6)[None] < xys.lengths[:, None]
    sc = xys.x[:, 2, :, :, 0]
    assert (sc[valid] >= 0.5).all() and (sc[~valid] == 0).all()
    with pytest.raises(ValueError, match="channels"):
        SyntheticSkeletons(channels="xyzw", **common)
