"""The zoo's records: a loaded model (:class:`ZooModel`), its evaluation sets (:class:`EvalSet`)
and a row of the model table (:class:`ZooEntry`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np


@dataclass
class EvalSet:
    name: str  # "mnist_5k", "imagenet_foolbox_20", "ai_benchmark_heldout_50", ...
    images: np.ndarray  # preprocessed float32, NCHW, shape (N, C, H, W)
    labels: Optional[np.ndarray]  # int64 (N,) or None when unlabeled


@dataclass
class ZooModel:
    name: str  # a key of zoo.MODELS: "mnist_cnn", "efficientnet_lite0", "fashion_resnet_v2", ...
    mod: Any  # tvm.IRModule (Relax); "main"(input, *weights), weights are parameters
    params: Dict[str, np.ndarray]  # weight name -> array (keys == main's param name_hints)
    input_name: str  # name of the data input of main
    batch_size: int  # the fixed batch dimension main was built for
    preprocess: Callable  # PIL.Image or path -> float32 (C, H, W)
    calib: np.ndarray  # calibration images, preprocessed (N, C, H, W)
    eval_sets: List[EvalSet] = field(default_factory=list)
    torch_model: Any = None  # the float torch model (eval mode), for reference checks (torch models)


@dataclass(frozen=True)
class ZooEntry:
    name: str
    loader: Callable[[int, str], ZooModel]  # (batch_size, cache root) -> ZooModel
    default_batch: int  # the batch the command line evaluates with
    eval_sets: Optional[Tuple[str, ...]]  # the eval sets the command line reports; None: all
    description: str
