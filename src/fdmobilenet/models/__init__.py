"""Models: names (``list_models``), architectures, weights and ``create_model``. Re-exports only, imported
on first use (PEP 562), so ``fdmobilenet models`` and other name look-ups do not import torch.

Layers, lowest first (a module imports only from layers below it; tests/test_layers.py checks there is
no cycle): ``_registry`` (names, families, fixed arguments) and ``_releases`` (the authors' release
table), pure data -> ``common``, ``mobilenet``, ``shufflenet``, ``torchvision_nets`` (the networks) ->
``_builder`` (architecture from a name, key maps) and ``hub`` (download and verify) -> ``detection``
(SSDLite detectors on those backbones; imports torchvision, so loaded only when a detector is built) ->
``pretrained`` (convert the authors' files, build from weights, load detectors) -> ``_factory``
(``create_model``, ``solve_width``).
``_complexity_table`` holds generated MACs and parameters for ``fdmobilenet models``.
"""

from __future__ import annotations

from .._utils import lazy_exports

_EXPORTS = {
    "DETECTOR_FAMILIES": "_registry",
    "FAMILIES": "_registry",
    "PAPER_FAMILIES": "_registry",
    "RELEASED_WIDTHS": "_releases",
    "RELEASES": "_releases",
    "WIDTHS": "_registry",
    "DepthwiseSeparableNet": "mobilenet",
    "SSDLite": "detection",
    "build_detector": "detection",
    "ShuffleNetV1": "shufflenet",
    "build_from_weights": "pretrained",
    "convert_authors_checkpoint": "pretrained",
    "create_model": "_factory",
    "default_cfg": "_builder",
    "detector_metadata": "detection",
    "family_kwargs": "_registry",
    "infer_model_name": "pretrained",
    "list_models": "_registry",
    "macs_by_part": "detection",
    "model_family": "_registry",
    "model_task": "_registry",
    "read_pretrained": "pretrained",
    "register_model": "_registry",
    "solve_width": "_factory",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
