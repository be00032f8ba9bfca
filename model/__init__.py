"""PyTorch side of locore-edge: the SelectiveScan op, bidirectional Mamba-2 blocks, the
LOCORE-Mamba re-ranker and its checkpoints. Needs ``pip install 'locore-edge[export]'``."""

from locore.deps import require

require("torch", "locore.model (the PyTorch re-ranker)")

from locore.model.checkpoint import (  # noqa: E402
    CheckpointError,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from locore.model.dino import (  # noqa: E402
    AmesDetectorHead,
    DinoLocalFeatures,
    DinoOutput,
    DinoWeightsError,
)
from locore.model.mamba import BiMamba2Block, BiMamba2Mixer  # noqa: E402
from locore.model.reranker import LocoreReranker  # noqa: E402
from locore.model.selective_scan import selective_scan_chunked, selective_scan_ref  # noqa: E402

__all__ = [
    "AmesDetectorHead",
    "DinoLocalFeatures",
    "DinoOutput",
    "DinoWeightsError",
    "BiMamba2Block",
    "BiMamba2Mixer",
    "CheckpointError",
    "LocoreReranker",
    "load_checkpoint",
    "read_checkpoint_config",
    "save_checkpoint",
    "selective_scan_chunked",
    "selective_scan_ref",
]
