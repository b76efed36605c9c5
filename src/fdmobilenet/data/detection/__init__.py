"""Detection data as users have it: PASCAL VOC folders and COCO ``instances_*.json`` files, read into one
per-image annotation record, split into train/val by the folder's own lists, and turned into tensors.

Reading never stops on one bad file: malformed or hostile XML, unknown classes, impossible boxes and
missing photos are collected as ``(file, reason)`` problems and only that box or image is left out,
as ``data.images`` does for unreadable photos. Structural mistakes (a path that is no detection data,
a list that does not exist) are one-line ``ParameterError``s naming the path and what is expected.

Coordinates: records hold float32 ``[x1, y1, x2, y2]`` boxes in pixels of the stored image, corners
on the pixel grid (a box covering the whole W x H image is ``[0, 0, W, H]``): COCO's ``xywh`` as it is,
VOC's 1-based inclusive pixel indices as ``[xmin - 1, ymin - 1, xmax, ymax]`` (torchvision and
Detectron do the same). Record labels are class indices 0..K-1; the tensors ``DetectionDataset`` hands
a model use 1..K, 0 being background (torchvision SSD's convention). Photos are used as stored: EXIF
orientation is not applied, because annotation files refer to the stored pixels (as COCO's do).

The modules are split by what they read, so each format's hazards stay in one place:

- ``_common``: constants, the record types and the box checks every reader shares.
- ``voc``: VOC folders, one small possibly hostile XML file per photo (parsed with defusedxml).
- ``coco``: COCO json files, one large document of id-linked tables.
- ``layout``: which format a path holds, train/val/test selection, seeded hold-outs, ``open_detection*``.
- ``dataset``: records to tensors (``DetectionDataset``, ``collate_detection``, the box-aware transforms).

Drawing detections is not data reading: it is ``fdmobilenet.draw``, beside prediction. ``MAX_XML_BYTES``
and ``MAX_COCO_JSON_BYTES`` are read from this package when a file is read, so setting them here works.
"""

from ._common import (
    EDGE_TOLERANCE_PX,
    LAYOUT_HELP,
    MAX_COCO_JSON_BYTES,
    MAX_XML_BYTES,
    VOC_CLASSES,
    VOC_LIST_NAMES,
    AnnotationSet,
    DetectionSplit,
    ImageAnnotation,
    Problem,
)
from .coco import read_coco
from .dataset import DetectionDataset, collate_detection, detection_eval_transform, detection_train_transform
from .layout import is_detection_data, open_detection, open_detection_eval
from .voc import read_voc

__all__ = [
    "EDGE_TOLERANCE_PX",
    "LAYOUT_HELP",
    "MAX_COCO_JSON_BYTES",
    "MAX_XML_BYTES",
    "VOC_CLASSES",
    "VOC_LIST_NAMES",
    "AnnotationSet",
    "DetectionDataset",
    "DetectionSplit",
    "ImageAnnotation",
    "Problem",
    "collate_detection",
    "detection_eval_transform",
    "detection_train_transform",
    "is_detection_data",
    "open_detection",
    "open_detection_eval",
    "read_coco",
    "read_voc",
]
