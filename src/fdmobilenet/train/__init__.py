"""``fdmobilenet train``: the paper's ImageNet recipe (and ours) on any image folder, from one CPU
to many GPUs, with exact resume.

One ``TrainConfig`` dataclass holds every setting; its defaults *are* the paper's recipe, named
recipes and YAML files override some fields, and every field is also a command-line flag.
The learning rate is a pure function of the optimizer step and the data order a pure function of
(seed, epoch), so a checkpoint only needs the step to continue exactly where a run stopped.

Modules: ``config`` (settings, recipes, schedules), ``distributed`` (ranks), ``inputs`` (data and the
three input pipelines), ``optim`` (model, optimizer, learning rate), ``checkpoint`` (state and files),
``outputs`` (metrics, TensorBoard, curves), ``mixing`` (MixUp/CutMix of a batch), ``distill`` (teachers and
the distillation loss), ``tasks`` / ``detect`` (what classification and detection plug into the engine),
``choose`` (which task, which ``auto`` recipe), ``engine`` (the loop), ``runner`` (a job in, a finished run
out) and, on top, ``compare`` (budget-matched runs of several families and their report, with one plug-in per
task: ``compare_classification``, ``compare_detection``) and ``fit_data`` (``fit --data``).
"""

from .choose import choose_recipe, data_task
from .config import (
    EXIT_DIVERGED,
    RECIPES,
    TrainConfig,
    finetune_lr,
    load_recipe,
    make_config,
    resolution_schedule,
    train_resolution_at,
)
from .engine import Diverged, TrainResult, train
from .optim import lr_at, peak_lr

__all__ = [
    "EXIT_DIVERGED",
    "RECIPES",
    "Diverged",
    "TrainConfig",
    "TrainResult",
    "choose_recipe",
    "data_task",
    "finetune_lr",
    "load_recipe",
    "lr_at",
    "make_config",
    "peak_lr",
    "resolution_schedule",
    "train",
    "train_resolution_at",
]
