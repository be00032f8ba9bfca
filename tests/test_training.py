"""Training with the LOCORE objective on a synthetic retrieval set in the AMES file layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from locore.cli import main
from locore.model import load_checkpoint
from locore.model.training import TrainConfig, TrainingData, sample_window, train
from locore.runtime.ames import write_features
from locore.runtime.ground_truth import GroundTruth, write_ground_truth
from locore.runtime.local_features import LocalFeatures
from locore.runtime.shortlist import write_shortlist

ND, DL = 8, 16


def _synthetic(seed: int = 0, nq: int = 10, ndb: int = 60, npos: int = 3):
    """Each query has ``npos`` positives that hold noisy copies of most of its descriptors;
    everything else is random. Shortlists hold all positives at random positions."""
    rng = np.random.default_rng(seed)

    def unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    q = unit(rng.normal(size=(nq, ND, DL)))
    db = unit(rng.normal(size=(ndb, ND, DL)))
    gnd, sl_ids = [], []
    for i in range(nq):
        pos = rng.choice(ndb, size=npos, replace=False)
        for p in pos:
            keep = rng.permutation(ND)[: ND - 2]
            db[p, : ND - 2] = unit(q[i, keep] + 0.25 * rng.normal(size=(ND - 2, DL)))
        gnd.append({"easy": pos[:2], "hard": pos[2:], "junk": np.array([], np.int64)})
        others = rng.permutation(np.setdiff1d(np.arange(ndb), pos))[: 40 - npos]
        sl_ids.append(rng.permutation(np.concatenate([pos, others])))

    def batch(desc):
        n = desc.shape[0]
        return LocalFeatures(
            desc, np.zeros((n, ND), np.int64), np.full((n, ND, 2), 0.5, np.float32),
            np.ones((n, ND), np.float32), np.ones((n, ND), bool),
        )  # fmt: skip

    ids = np.stack(sl_ids)
    return batch(q), batch(db), ids, gnd


def _mean_ap(model, data, ids, gnd):
    aps = []
    with torch.no_grad():
        for i in range(len(gnd)):
            g = ids[i]
            scores = model(
                query_desc=torch.from_numpy(data.queries.descriptors[i : i + 1]),
                query_mask=torch.from_numpy(data.queries.mask[i : i + 1]),
                gallery_desc=torch.from_numpy(data.database.descriptors[g][None]),
                gallery_mask=torch.from_numpy(data.database.mask[g][None]),
            )[0].numpy()
            rel = np.isin(g[np.argsort(-scores)], np.concatenate([gnd[i]["easy"], gnd[i]["hard"]]))
            hits = np.cumsum(rel)
            aps.append(float((hits / np.arange(1, len(rel) + 1))[rel].mean()))
    return float(np.mean(aps))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    q, db, ids, gnd = _synthetic()
    for name, b in (("q.h5", q), ("db.h5", db)):
        write_features(root / name, b)
    write_shortlist(root / "nn.pkl", np.zeros(ids.shape, np.float32), ids)
    write_ground_truth(root / "gnd.pkl", GroundTruth(gnd))
    return root, ids, gnd


def test_sample_window_injects_positives_and_skips_junk():
    q, db, ids, gnd = _synthetic(seed=1)
    gnd[0]["junk"] = ids[0, :5]
    data = TrainingData.from_arrays(q, db, ids[:, :10], [np.r_[g["easy"], g["hard"]] for g in gnd],
                                    [g["junk"] for g in gnd])  # fmt: skip
    cfg = TrainConfig(window=8, min_positives=2)
    rng = np.random.default_rng(0)
    for qi in range(len(gnd)):
        win, lab = sample_window(data, qi, cfg, rng)
        assert len(win) == len(set(win.tolist())) <= 8
        assert lab.sum() >= 2
        assert not set(win.tolist()) & set(data.junk[qi].tolist())
        assert np.array_equal(lab, np.isin(win, data.positives[qi]).astype(np.float32))


def test_training_learns_and_cli_round_trip(files, tmp_path, capsys):
    root, ids, gnd = files
    out = tmp_path / "ckpt"
    code = main([
        "train", "--query-features", str(root / "q.h5"), "--db-features", str(root / "db.h5"),
        "--shortlist", str(root / "nn.pkl"), "--ground-truth", str(root / "gnd.pkl"),
        "--allow-pickle", "--output", str(out), "--num-desc", str(ND), "--steps", "150",
        "--batch-size", "4", "--window", "16", "--lr", "3e-3", "--threads", "1",
        "--set", "d_model=32", "--set", "n_layers=1",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    model = load_checkpoint(out)
    assert model.config.num_desc == ND and model.config.desc_dim == DL
    data = TrainingData.from_files(root / "q.h5", root / "db.h5", root / "nn.pkl",
                                   root / "gnd.pkl", num_desc=ND, allow_pickle=True)  # fmt: skip
    trained = _mean_ap(model, data, ids, gnd)
    torch.manual_seed(0)
    from locore.model import LocoreReranker

    untrained = _mean_ap(LocoreReranker(model.config).eval(), data, ids, gnd)
    # 3 positives among 40: random ordering gives an mAP around 0.1-0.2.
    assert trained > 0.6 and trained > untrained + 0.3, (trained, untrained)


def test_pickles_need_permission(files, tmp_path):
    root, _, _ = files
    with pytest.raises(ValueError, match="pickle"):
        TrainingData.from_files(root / "q.h5", root / "db.h5", root / "nn.pkl",
                                root / "gnd.pkl", num_desc=ND)  # fmt: skip


def test_resume_is_bit_exact(files, tmp_path):
    root, _, _ = files
    data = TrainingData.from_files(root / "q.h5", root / "db.h5", root / "nn.pkl",
                                   root / "gnd.pkl", num_desc=ND, allow_pickle=True)  # fmt: skip
    cfg = TrainConfig(steps=12, batch_size=2, window=8, checkpoint_every=5, warmup=3,
                      model_overrides={"d_model": 16, "n_layers": 1})  # fmt: skip
    straight = train(data, tmp_path / "a", cfg, progress=False)
    part = train(data, tmp_path / "b", cfg, progress=False, stop_at=7)
    assert part.steps == 7 and not (tmp_path / "b" / "config.json").exists()
    resumed = train(data, tmp_path / "b", cfg, progress=False)
    assert resumed.losses == straight.losses
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    other = TrainConfig(**{**cfg.to_dict(), "lr": 1e-4})
    with pytest.raises(ValueError, match="other options"):
        train(data, tmp_path / "b", other, progress=False)


def test_a_run_extends_with_more_steps(files, tmp_path):
    """Same options with more steps: the run goes on from its last state (the first steps are
    not redone: their losses are kept as they were); the same steps again writes nothing; fewer
    steps than done, or another option, is refused with what to do."""
    root, _, _ = files
    data = TrainingData.from_files(root / "q.h5", root / "db.h5", root / "nn.pkl",
                                   root / "gnd.pkl", num_desc=ND, allow_pickle=True)  # fmt: skip
    cfg = TrainConfig(steps=5, batch_size=2, window=8, checkpoint_every=100, warmup=2,
                      model_overrides={"d_model": 16, "n_layers": 1})  # fmt: skip
    first = train(data, tmp_path / "r", cfg, progress=False)
    assert first.new_steps == 5 and len(first.losses) == 5
    config = (tmp_path / "r" / "config.json").read_bytes()
    again = train(data, tmp_path / "r", cfg, progress=False)
    assert again.new_steps == 0 and again.losses == first.losses
    assert (tmp_path / "r" / "config.json").read_bytes() == config  # not rewritten
    longer = TrainConfig(**{**cfg.to_dict(), "steps": 8})
    extended = train(data, tmp_path / "r", longer, progress=False)
    assert extended.steps == 8 and extended.new_steps == 3
    assert extended.losses[:5] == first.losses and len(extended.losses) == 8
    training = json.loads((tmp_path / "r" / "config.json").read_text())["extra"]["training"]
    assert training["steps"] == 8 and training["extended_from_steps"] == 5
    with pytest.raises(ValueError, match="already at step 8, beyond the 6 steps"):
        train(data, tmp_path / "r", TrainConfig(**{**cfg.to_dict(), "steps": 6}), progress=False)
    with pytest.raises(ValueError, match=r"other options \(lr 0.002 -> 0.01\)"):
        train(data, tmp_path / "r", TrainConfig(**{**longer.to_dict(), "lr": 1e-2}),
              progress=False)  # fmt: skip


def test_queries_without_descriptors_are_skipped_on_request(files):
    """A query whose rows are all masked (no keypoint found, as in the demo's train split) is an
    error by default and left out of training with skip_empty_queries (the CLI's choice)."""
    from dataclasses import replace

    from locore.runtime.local_features import ImageIdError

    q, db, ids, gnd = _synthetic(seed=3)
    empty = sorted(np.random.default_rng().choice(len(gnd), size=2, replace=False).tolist())
    mask = q.mask.copy()
    mask[empty] = False
    q = replace(q, mask=mask)
    pos = [np.r_[g["easy"], g["hard"]] for g in gnd]
    junk = [g["junk"] for g in gnd]
    with pytest.raises(ImageIdError, match="no valid descriptor"):
        TrainingData.from_arrays(q, db, ids, pos, junk)
    data = TrainingData.from_arrays(q, db, ids, pos, junk, skip_empty_queries=True)
    assert data.skipped_queries == empty
    assert sorted(data.trainable_queries().tolist()) == sorted(set(range(len(gnd))) - set(empty))


def test_global_descriptors_train_a_global_token_model(files, tmp_path, capsys):
    """--set use_global=true takes --query-global/--db-global: global_dim comes from the files,
    the packed batches carry them, the recipe names them by role; either half alone is refused."""
    from locore.runtime.global_descriptors import write_global_descriptors

    root, ids, gnd = files
    rng = np.random.default_rng(5)
    dg = 6
    write_global_descriptors(root / "qg.npy", rng.normal(size=(len(gnd), dg)).astype(np.float32))
    write_global_descriptors(root / "dbg.npy", rng.normal(size=(60, dg)).astype(np.float32))
    base = [
        "train", "--query-features", str(root / "q.h5"), "--db-features", str(root / "db.h5"),
        "--shortlist", str(root / "nn.pkl"), "--ground-truth", str(root / "gnd.pkl"),
        "--allow-pickle", "--num-desc", str(ND), "--steps", "3", "--batch-size", "2",
        "--window", "8", "--threads", "1", "--set", "d_model=16", "--set", "n_layers=1",
    ]  # fmt: skip
    globs = ["--query-global", str(root / "qg.npy"), "--db-global", str(root / "dbg.npy")]
    out = tmp_path / "g"
    code = main([*base, *globs, "--set", "use_global=true", "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    model = load_checkpoint(out)
    assert model.config.use_global and model.config.global_dim == dg
    assert model.global_proj is not None and model.global_proj.in_features == dg
    recipe = json.loads((out / "config.json").read_text())["extra"]["training"]["command"]
    assert "--query-global <query-global> --db-global <db-global>" in recipe
    assert str(root) not in recipe
    assert main([*base, "--set", "use_global=true", "--output", str(tmp_path / "x")]) == 2
    assert "needs --query-global and --db-global" in capsys.readouterr().err
    assert main([*base, *globs, "--output", str(tmp_path / "y")]) == 2
    assert "add --set use_global=true" in capsys.readouterr().err
