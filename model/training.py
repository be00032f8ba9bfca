"""Training with the LOCORE objective on AMES/LOCORE-layout feature files.

Each sample is one query and W images of its shortlist (hard negatives from the top of the
shortlist, plus ground-truth positives injected when the shortlist lacks them), in a random
order drawn anew every step. Every token of a gallery image (IMG, its valid descriptors, SEP)
gets a binary label, 1 when the image is a positive of the query; query tokens are unlabelled;
junk images are never sampled. The loss is the mean binary cross-entropy over labelled tokens.

Training is resumable: the model, the optimiser and the step are saved (safetensors + JSON, never
pickles) every ``checkpoint_every`` steps to ``<output>/train_state``; the final checkpoint is a
normal checkpoint folder (:func:`locore.model.save_checkpoint`). Running again with the same
options resumes an interrupted run bit-exactly (and leaves a finished one as it is); running
with only ``steps`` raised extends a run, finished or not, from its last state to the new total
(the learning rate follows the cosine schedule of the new total from there, so the result is
close to, not identical with, a run trained for the new total from the start). Any other change
of options is refused: start over (``resume=False``) or use another output folder.

The model shipped inside the package (``locore/assets``) is read-only: ``train`` refuses to
write there.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from locore.checkpoint_format import CheckpointError
from locore.config import GALLERY_MASK, QUERY_MASK, JsonConfig, LocoreConfig
from locore.errors import UsageError
from locore.fileio import atomic_path, atomic_write_text
from locore.model.checkpoint import save_checkpoint
from locore.model.reranker import LocoreReranker
from locore.progress import progress_bar
from locore.runtime.backends.base import available_cores
from locore.runtime.local_features import ImageIdError, LocalFeatures, as_image_ids
from locore.runtime.packing import Packer

log = logging.getLogger(__name__)

STATE_DIR = "train_state"


@dataclass
class TrainConfig(JsonConfig):
    """Hyper-parameters of a training run (round-trips through JSON)."""

    error = ValueError

    preset: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    steps: int = 600
    batch_size: int = 8
    window: int = 32  # gallery images per sample
    shortlist_depth: int = 100  # negatives are drawn from the top of the shortlist
    min_positives: int = 2  # inject ground-truth positives up to this count per sample
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 50
    seed: int = 0
    checkpoint_every: int = 100
    threads: int = 0  # torch threads; 0 = torch's default

    def validate(self) -> None:
        """Raise :class:`~locore.errors.UsageError` for a value no run can use (``steps=0``
        would write an untrained model; ``bool`` is not an integer)."""
        positive = ("steps", "batch_size", "window", "shortlist_depth", "checkpoint_every")
        for name in (*positive, "min_positives", "warmup", "seed", "threads"):
            value = getattr(self, name)
            low = 1 if name in positive else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
                or (name == "lr" and value == 0)
            ):
                bound = "> 0" if name == "lr" else ">= 0"
                raise UsageError(f"{name} must be a finite number {bound}, got {value!r}")
        if self.threads > (cores := available_cores()):
            raise UsageError(
                f"threads must be at most {cores} (the CPU cores available), got {self.threads}; "
                "0 uses torch's default"
            )
        if not isinstance(self.model_overrides, dict):
            raise UsageError(f"model_overrides must be a dict, got {self.model_overrides!r}")


@dataclass
class TrainingData:
    """In-memory training set: the first Nd local features of every query and database image.

    queries: LocalFeatures [Nq, Nd, ...]; database: LocalFeatures [Ndb, Nd, ...];
    shortlist_ids: [Nq, K] int64; positives / junk: per query, arrays of database ids.
    """

    queries: LocalFeatures
    database: LocalFeatures
    shortlist_ids: np.ndarray
    positives: list[np.ndarray]
    junk: list[np.ndarray]
    skipped_queries: list[int] = field(default_factory=list)  # no valid descriptor: not trained

    @classmethod
    def from_files(
        cls,
        query_features: str | Path,
        db_features: str | Path,
        shortlist: str | Path,
        ground_truth: str | Path,
        num_desc: int,
        allow_pickle: bool = False,
        skip_empty_queries: bool = False,
        query_global: str | Path | None = None,
        db_global: str | Path | None = None,
    ) -> TrainingData:
        """Reads the four files (see :meth:`from_arrays` for ``skip_empty_queries``); with
        ``query_global`` and ``db_global`` (raw float32 [N, Dg] files) also the global
        descriptors, for models with ``use_global``."""
        from locore.runtime.ames import FeatureFile
        from locore.runtime.global_descriptors import read_global_descriptors
        from locore.runtime.ground_truth import read_ground_truth
        from locore.runtime.shortlist import read_shortlist

        if (query_global is None) != (db_global is None):
            raise UsageError("give both query and database global descriptors, or neither")
        with FeatureFile(query_features) as fq, FeatureFile(db_features) as fd:
            q = fq.read_all(num_desc)
            d = fd.read_all(num_desc)
        if query_global is not None and db_global is not None:
            qg = read_global_descriptors(query_global, num_images=len(q))
            dg = read_global_descriptors(db_global, dim=qg.shape[1], num_images=len(d))
            q = replace(q, global_desc=np.asarray(qg, dtype=np.float32))
            d = replace(d, global_desc=np.asarray(dg, dtype=np.float32))
        sl = read_shortlist(shortlist, allow_pickle=allow_pickle)
        gt = read_ground_truth(ground_truth, allow_pickle=allow_pickle)
        positives = [np.concatenate([g["easy"], g["hard"]]).astype(np.int64) for g in gt.gnd]
        junk = [g["junk"].astype(np.int64) for g in gt.gnd]
        return cls.from_arrays(q, d, sl.ids, positives, junk, skip_empty_queries)

    @classmethod
    def from_arrays(
        cls,
        queries: LocalFeatures,
        database: LocalFeatures,
        shortlist_ids: np.ndarray,
        positives: Sequence[np.ndarray],
        junk: Sequence[np.ndarray],
        skip_empty_queries: bool = False,
    ) -> TrainingData:
        """From batches of query and database features ([N, Nd, ...] each) and the labels.

        A query with positives but no valid descriptor (no keypoint was found: every row
        masked) cannot be packed; it is an :class:`ImageIdError`, or with
        ``skip_empty_queries`` left out of training (listed in ``skipped_queries``)."""
        for role, feats in (("queries", queries), ("database", database)):
            if feats.descriptors.ndim != 3:
                raise ValueError(
                    f"{role} must be a batch of features [N, Nd, Dl], got descriptors "
                    f"{list(feats.descriptors.shape)}"
                )
        nq, ndb = len(queries), len(database)
        shortlist_ids = np.asarray(shortlist_ids)
        if shortlist_ids.ndim != 2 or shortlist_ids.shape[0] != nq or len(positives) != nq:
            raise UsageError(
                f"{nq} queries, but the shortlist has {list(shortlist_ids.shape)} (expected "
                f"[{nq}, K]) and the ground truth {len(positives)} entries; they must describe "
                "the same queries"
            )
        if len(junk) != nq:
            raise UsageError(f"{nq} queries, but junk lists for {len(junk)}; give one per query")
        # Padded shortlist slots (-1, faiss) are dropped per query by sample_window.
        listed = shortlist_ids[shortlist_ids != -1] if shortlist_ids.dtype.kind in "iuf" else None
        as_image_ids(shortlist_ids if listed is None else listed, ndb, "the shortlist")
        checked_pos = [
            as_image_ids(p, ndb, f"the ground-truth positives of query {q}")
            for q, p in enumerate(positives)
        ]
        checked_junk = [
            as_image_ids(j, ndb, f"the ground-truth junk of query {q}") for q, j in enumerate(junk)
        ]
        empty = [
            q for q in range(nq) if len(checked_pos[q]) and not np.asarray(queries.mask[q]).any()
        ]
        if empty and skip_empty_queries:
            log.warning(
                "%d of %d queries have no valid descriptor (every row masked) and are left out "
                "of training: %s",
                len(empty),
                nq,
                empty,
            )
            checked_pos = [
                np.zeros(0, np.int64) if q in empty else p for q, p in enumerate(checked_pos)
            ]
        elif empty:
            raise ImageIdError(
                f"queries {empty[:10]}{'...' if len(empty) > 10 else ''} have positives but no "
                "valid descriptor (every row masked): there is nothing to match. Drop them from "
                "the training set, re-extract their features, or skip them (CLI: the default; "
                "skip_empty_queries=True)"
            )
        return cls(
            queries,
            database,
            np.asarray(shortlist_ids, dtype=np.int64),
            checked_pos,
            checked_junk,
            empty,
        )

    @property
    def num_queries(self) -> int:
        return len(self.queries)

    @property
    def num_db_images(self) -> int:
        return len(self.database)

    def trainable_queries(self) -> np.ndarray:
        """Queries with at least one positive (others teach nothing)."""
        return np.array([i for i, p in enumerate(self.positives) if len(p)], dtype=np.int64)


def sample_window(
    data: TrainingData, query: int, cfg: TrainConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(gallery ids [W], labels [W]) for one query, in a fresh random order."""
    junk = set(data.junk[query].tolist())
    pos = set(data.positives[query].tolist())
    listed = data.shortlist_ids[query, : cfg.shortlist_depth]
    cands = [int(i) for i in listed if int(i) not in junk and int(i) != -1]
    cands = list(dict.fromkeys(cands))[: cfg.window]
    have = sum(1 for i in cands if i in pos)
    missing = [p for p in data.positives[query].tolist() if p not in set(cands)]
    need = min(max(cfg.min_positives - have, 0), len(missing))
    if need:
        inject = rng.choice(missing, size=need, replace=False).tolist()
        negatives_at = [k for k, i in enumerate(cands) if i not in pos]
        for k, p in zip(reversed(negatives_at), inject, strict=False):
            cands[k] = int(p)
        cands += [int(p) for p in inject[len(negatives_at) :]][: cfg.window - len(cands)]
    ids = np.asarray(cands, dtype=np.int64)
    ids = ids[rng.permutation(len(ids))]
    labels = np.array([1.0 if int(i) in pos else 0.0 for i in ids], dtype=np.float32)
    return ids, labels


def make_batch(
    data: TrainingData,
    queries: np.ndarray,
    cfg: TrainConfig,
    rng: np.random.Generator,
    packer: Packer,
) -> tuple[dict[str, Tensor], Tensor]:
    """Model inputs (``packer``'s feeds as tensors) and image labels [B, W].

    Windows shorter than the longest of the batch are padded with all-masked images.
    """
    samples = [sample_window(data, int(q), cfg, rng) for q in queries]
    width = max(len(ids) for ids, _ in samples)
    bsz = len(queries)
    gallery_ids = np.zeros((bsz, width), np.int64)
    real = np.zeros((bsz, width), bool)  # False: a padding image
    labels = np.zeros((bsz, width), np.float32)
    for b, (ids, lab) in enumerate(samples):
        gallery_ids[b, : len(ids)] = ids
        real[b, : len(ids)] = True
        labels[b, : len(ids)] = lab
    gallery = data.database[gallery_ids]  # [B, W, Nd, ...]
    gallery = replace(gallery, mask=gallery.mask & real[..., None])
    feeds = packer.pack(data.queries[queries], gallery)
    inputs = {name: torch.from_numpy(value) for name, value in feeds.items()}
    return inputs, torch.from_numpy(labels)


def token_loss(model: LocoreReranker, inputs: dict[str, Tensor], labels: Tensor) -> Tensor:
    """Mean BCE over the valid tokens of gallery images; labels [B, G] per image."""
    _, token_logits = model(**inputs, return_token_logits=True)
    dmask = torch.cat([inputs[QUERY_MASK][:, None], inputs[GALLERY_MASK]], dim=1).bool()
    tmask = model.token_mask(dmask)
    bsz, ngal = labels.shape
    tpi = model.config.tokens_per_image
    logits = token_logits.reshape(bsz, ngal + 1, tpi)[:, 1:]
    valid = tmask.reshape(bsz, ngal + 1, tpi)[:, 1:].float()
    target = labels[:, :, None].expand_as(logits)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (loss * valid).sum() / valid.sum().clamp_min(1.0)


# ---- resumable state ----------------------------------------------------------------------------
def _save_state(
    directory: Path, model: LocoreReranker, opt: torch.optim.Optimizer, meta: dict[str, Any]
) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    for idx, state in opt_state["state"].items():
        for key, value in state.items():
            t = value if isinstance(value, Tensor) else torch.tensor(value)
            tensors[f"opt.{idx}.{key}"] = t.detach().contiguous().reshape(t.shape)
    with atomic_path(directory / "state.safetensors") as tmp:
        save_file(tensors, str(tmp))
    meta = dict(meta, param_groups=opt_state["param_groups"])
    atomic_write_text(directory / "state.json", json.dumps(meta, indent=2) + "\n")


def _load_state(
    directory: Path, model: LocoreReranker, opt: torch.optim.Optimizer
) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        meta = json.loads((directory / "state.json").read_text())
        tensors = load_file(str(directory / "state.safetensors"))
        model.load_state_dict(
            {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True
        )
        state: dict[int, dict[str, Tensor]] = {}
        for name, value in tensors.items():
            if name.startswith("opt."):
                _, idx, key = name.split(".", 2)
                state.setdefault(int(idx), {})[key] = value
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except PermissionError:
        raise
    except Exception as exc:  # json, safetensors, torch: a damaged or foreign state
        raise CheckpointError(
            f"{directory} holds a damaged training state ({type(exc).__name__}: {exc}); "
            "delete it or pass resume=False (CLI: --no-resume) to start over"
        ) from exc
    return dict(meta)


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int  # steps trained in all
    losses: list[float]  # every step's loss, resumed steps included
    seconds: float  # this call's training time
    new_steps: int = 0  # steps this call trained (0: the run was already finished)


def _refuse_shipped(output: Path) -> None:
    from locore.checkpoint_format import shipped_model_dir
    from locore.errors import OutputError

    assets = shipped_model_dir().parent
    real = output.expanduser().resolve()
    if real == assets or assets in real.parents:
        raise OutputError(
            f"{output} is inside the installed package's model folder ({assets}); the shipped "
            "model is read-only. Train into a folder of your own (the CLI's default is "
            "~/.local/share/locore-edge/models/<name>)"
        )


def _resume_point(state_dir: Path, cfg: TrainConfig) -> int | None:
    """The step to resume from (None: the state is for other options); raises when it cannot
    be used. A state whose options differ from ``cfg`` in ``steps`` only is extended."""
    try:
        meta = json.loads((state_dir / "state.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{state_dir / 'state.json'} is damaged ({exc}); delete it or pass resume=False "
            "(CLI: --no-resume) to start over"
        ) from exc
    saved = meta.get("train_config") if isinstance(meta, dict) else None
    if not isinstance(saved, dict) or not isinstance(meta.get("step"), int):
        raise CheckpointError(
            f"{state_dir / 'state.json'} is not a training state; delete it or pass resume=False "
            "(CLI: --no-resume) to start over"
        )
    ours = cfg.to_dict()
    differ = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
    if differ and differ != ["steps"]:
        shown = ", ".join(f"{k} {saved.get(k)!r} -> {ours.get(k)!r}" for k in differ)
        raise ValueError(
            f"{state_dir} holds a run with other options ({shown}); use the same options to "
            "resume it (only steps may grow, to extend it), pass resume=False (CLI: --no-resume) "
            "to start over, or train into another output folder"
        )
    if meta["step"] > cfg.steps:
        raise ValueError(
            f"{state_dir} holds a run already at step {meta['step']}, beyond the {cfg.steps} "
            f"steps asked for; pass steps >= {meta['step']} (CLI: --steps) to extend it, or "
            "resume=False (CLI: --no-resume) to start over"
        )
    return int(meta["step"])


def train(
    data: TrainingData,
    output: str | Path,
    cfg: TrainConfig | None = None,
    resume: bool = True,
    progress: bool = True,
    provenance: dict[str, Any] | None = None,
    stop_at: int | None = None,
) -> TrainResult:
    """Train a re-ranker on ``data``; writes a checkpoint folder to ``output``.

    With ``resume`` and a matching ``<output>/train_state``, training continues from there.
    ``stop_at`` ends this run after that many steps in all (state saved, no final checkpoint),
    for time-boxed sessions; the next call with ``resume`` goes on.
    """
    cfg = cfg or TrainConfig()
    cfg.validate()
    output = Path(output)
    _refuse_shipped(output)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    shapes = {"desc_dim": data.queries.desc_dim, "num_desc": data.queries.num_desc}
    if cfg.model_overrides.get("use_global"):
        if data.queries.global_desc is None:
            raise UsageError(
                "the model uses global descriptors (use_global=True), but the training data has "
                "none: give the query and database global descriptor files"
            )
        shapes["global_dim"] = int(data.queries.global_desc.shape[-1])
    for key, value in shapes.items():
        if key in cfg.model_overrides and cfg.model_overrides[key] != value:
            raise UsageError(
                f"model override {key}={cfg.model_overrides[key]!r} contradicts the training "
                f"features, which have {key}={value}; drop the override"
            )
    model_cfg = LocoreConfig.preset(cfg.preset, **{**cfg.model_overrides, **shapes})
    scale_max = int(max(data.queries.scales.max(initial=0), data.database.scales.max(initial=0)))
    if scale_max >= model_cfg.num_scales:
        raise ValueError(
            f"scale ids reach {scale_max}, but the model has {model_cfg.num_scales} scales; "
            f"set model_overrides num_scales >= {scale_max + 1}"
        )
    torch.manual_seed(cfg.seed)
    model = LocoreReranker(model_cfg)
    packer = Packer(model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    queries = data.trainable_queries()
    if len(queries) == 0:
        raise ValueError("no query has a positive in the ground truth: nothing to learn")
    state_dir = output / STATE_DIR
    start, losses, extended_from = 0, [], None
    if resume and (state_dir / "state.json").is_file():
        _resume_point(state_dir, cfg)
        meta = _load_state(state_dir, model, opt)
        start, losses = int(meta["step"]), list(meta["losses"])
        if meta["train_config"]["steps"] != cfg.steps:
            extended_from = int(meta["train_config"]["steps"])
            log.info("extending a %d-step run from step %d to %d", extended_from, start, cfg.steps)
        else:
            log.info("resuming from step %d of %d", start, cfg.steps)
        if start == cfg.steps and (output / "config.json").is_file():
            log.info("%s is already trained for %d steps; nothing to do", output, cfg.steps)
            return TrainResult(output, cfg.steps, losses, 0.0, new_steps=0)
    model.train()
    t0 = time.perf_counter()
    bar = progress_bar(
        total=cfg.steps, initial=start, desc="train", unit="step", enabled=progress, leave=True
    )
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    for step in range(start, end):
        rng = np.random.default_rng([cfg.seed, step])  # the same batch whether resumed or not
        batch_q = rng.choice(queries, size=min(cfg.batch_size, len(queries)), replace=False)
        inputs, labels = make_batch(data, batch_q, cfg, rng, packer)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * _lr_factor(step, cfg)
        loss = token_loss(model, inputs, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.item()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            meta = {"step": done, "losses": losses, "train_config": cfg.to_dict()}
            _save_state(state_dir, model, opt, meta)
    bar.close()
    seconds = time.perf_counter() - t0
    if end < cfg.steps:
        meta = {"step": end, "losses": losses, "train_config": cfg.to_dict()}
        _save_state(state_dir, model, opt, meta)
        log.info("stopped at step %d of %d; run again to resume", end, cfg.steps)
        return TrainResult(state_dir, end, losses, seconds, new_steps=end - start)
    model.eval()
    extra = {
        "training": {
            "train_config": cfg.to_dict(),
            "steps": cfg.steps,
            "final_loss_mean20": float(np.mean(losses[-20:])) if losses else None,
            "seconds_this_run": round(seconds, 1),
            **({"extended_from_steps": extended_from} if extended_from is not None else {}),
            **(provenance or {}),
        }
    }
    save_checkpoint(model, output, extra=extra)
    _save_state(
        state_dir, model, opt, {"step": cfg.steps, "losses": losses, "train_config": cfg.to_dict()}
    )
    return TrainResult(output, cfg.steps, losses, seconds, new_steps=cfg.steps - start)


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    return 0.5 * (1.0 + float(np.cos(np.pi * min(step - cfg.warmup, span) / span)))
