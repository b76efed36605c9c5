"""Which task a run is, decided once: the data's layout says it (photos with boxes -> detection), the recipe
``auto`` and the model name follow from that answer, and the engine picks the task's plug-in by the model.

Above ``tasks`` and ``detect`` (both plug into the engine), so neither imports the other.
"""

from __future__ import annotations

import dataclasses

from .._errors import ParameterError
from .config import TrainConfig, auto_recipe
from .detect import DetectionTask
from .tasks import ClassificationTask, Task

TASKS: dict[str, type[Task]] = {"classification": ClassificationTask, "detection": DetectionTask}


def data_task(data: str | None) -> str:
    """``detection`` for a VOC folder or COCO json (the layout is probed here, once), else ``classification``."""
    from ..data.detection import is_detection_data

    return "detection" if data is not None and is_detection_data(data) else "classification"


def choose_recipe(
    data: str, val_split: float, seed: int = 0, *, task: str | None = None, n_train: int | None = None
) -> tuple[str, str]:
    """The recipe ``auto`` means for ``data``, and why: ``detection`` for photos with boxes, else ``paper`` or
    ``small`` by the number of training images (``config.auto_recipe``). ``task`` and ``n_train`` are what the
    caller already knows (nothing is probed or counted twice); otherwise the split ``build_data`` makes is
    counted without decoding."""
    if (task or data_task(data)) == "detection":
        return "detection", f"{data} holds boxes (VOC/COCO annotations)"
    if n_train is None:
        from .inputs import load_folders

        n_train = len(load_folders(data, val_split, seed).train)
    return auto_recipe(n_train)


def model_for_data(cfg: TrainConfig, task: str | None = None) -> tuple[TrainConfig, str | None]:
    """The data decides the task: a classifier name given with photos of boxes becomes its SSDLite detector
    (``fd_mobilenet_050`` -> ``ssdlite_fd_mobilenet_050``), and the log says so; a detector given class
    folders is refused. ``task``: ``data_task(cfg.data)`` when the caller has it."""
    from ..models._registry import is_model, model_task

    if cfg.data is None:
        return cfg, None
    boxes, model = (task or data_task(cfg.data)) == "detection", model_task(cfg.model)
    if boxes and model == "classification":
        detector = f"ssdlite_{cfg.model}"
        if not is_model(detector):
            raise ParameterError("model", f"{cfg.data} holds boxes, and `model` {cfg.model} has no detector")
        return dataclasses.replace(cfg, model=detector), f"{cfg.data} holds boxes: training the detector {detector}"
    if not boxes and model == "detection":
        raise ParameterError(
            "data", f"`model` {cfg.model} is a detector, but {cfg.data} has no VOC/COCO annotations: give one that has"
        )
    return cfg, None


def task_for(cfg: TrainConfig) -> Task:
    """The plug-in of ``cfg.model``'s task (the registry's, which ``model_for_data`` matched to the data)."""
    from ..models._registry import model_task

    return TASKS[model_task(cfg.model)]()
