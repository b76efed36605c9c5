"""Which task a run is: the data decides (photos with boxes -> a detector), the model name confirms.

Above ``tasks`` and ``detect`` (both plug into the engine), so neither imports the other.
"""

from __future__ import annotations

import dataclasses

from .._errors import ParameterError
from .config import TrainConfig
from .detect import DetectionTask
from .tasks import ClassificationTask, Task


def model_for_data(cfg: TrainConfig) -> tuple[TrainConfig, str | None]:
    """The data decides the task: a classifier name given with photos of boxes becomes its SSDLite detector
    (``fd_mobilenet_050`` -> ``ssdlite_fd_mobilenet_050``), and the log says so; a detector given class
    folders is refused."""
    from ..data.detection import is_detection_data
    from ..models._registry import is_model, model_task

    if cfg.data is None:
        return cfg, None
    boxes, task = is_detection_data(cfg.data), model_task(cfg.model)
    if boxes and task == "classification":
        detector = f"ssdlite_{cfg.model}"
        if not is_model(detector):
            raise ParameterError("model", f"{cfg.data} holds boxes, and `model` {cfg.model} has no detector")
        return dataclasses.replace(cfg, model=detector), f"{cfg.data} holds boxes: training the detector {detector}"
    if not boxes and task == "detection":
        raise ParameterError(
            "data", f"`model` {cfg.model} is a detector, but {cfg.data} has no VOC/COCO annotations: give one that has"
        )
    return cfg, None


def task_for(cfg: TrainConfig) -> Task:
    """The task of ``cfg.model``: detectors (``ssdlite_*``) detect, everything else classifies."""
    from ..models._registry import model_task

    if model_task(cfg.model) == "detection":
        return DetectionTask()
    return ClassificationTask()
