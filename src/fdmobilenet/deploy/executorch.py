"""ExecuTorch (``.pte``) files delegated to XNNPACK, the CPU kernel library Android and iOS apps run, and a runner.

A ``.pte`` file has a static input shape (batch 1: what a phone app feeds) and carries the export
metadata as a second method, ``fdmobilenet_meta``, that returns the JSON as a uint8 tensor: the file
is self-describing like an ONNX export, with no side file to lose. ``PteClassifier`` runs it through
ExecuTorch's Python runtime with the interface ``OnnxClassifier`` has, so ``eval``, ``predict`` and
``bench`` take either. On x86 XNNPACK uses its AVX2/AVX-512 kernels: timings here are a proxy for an
ARM phone, not a measurement of one.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._errors import ParameterError
from .._utils import atomic_write_bytes, require
from .classifier import ExportedClassifier
from .fold import fold_batchnorm

META_METHOD = "fdmobilenet_meta"
EXECUTORCH_HINT = "pip install 'fdmobilenet[executorch]' (ExecuTorch with its XNNPACK delegate)"


def _meta_tensor(meta: dict[str, Any]) -> torch.Tensor:
    return torch.tensor(list(json.dumps(meta).encode()), dtype=torch.uint8)


def lower_to_pte(program: torch.export.ExportedProgram, path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Lower an exported program (float, or quantized with the XNNPACK quantizer) to XNNPACK and write it."""
    require("executorch", "ExecuTorch export", EXECUTORCH_HINT)
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(
        program, partitioner=[XnnpackPartitioner()], constant_methods={META_METHOD: _meta_tensor(meta)}
    )
    atomic_write_bytes(path, edge.to_executorch().buffer)


def export_quantized_pte(
    quantized: nn.Module, path: str | os.PathLike, meta: dict[str, Any], resolution: int = 224
) -> None:
    """An INT8 ``.pte`` from a PT2E graph quantized with the XNNPACK quantizer (``deploy.quantize``), batch 1."""
    example = (torch.randn(1, 3, resolution, resolution),)
    lower_to_pte(torch.export.export(quantized, example), path, meta)


def export_pte(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any], resolution: int = 224) -> None:
    """An fp32 ``.pte``: BatchNorm folded (the graph every export has), the whole graph delegated to XNNPACK."""
    example = (torch.randn(1, 3, resolution, resolution),)
    lower_to_pte(torch.export.export(fold_batchnorm(model), example), path, meta)


@contextlib.contextmanager
def _quiet_fd(fd: int = 2):
    """ExecuTorch's C++ runtime logs CPU probing to stderr on every load; silence it (failures still raise)."""
    saved = os.dup(fd)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def _runtime():
    require("executorch", "running .pte files", EXECUTORCH_HINT)
    from executorch.runtime import Runtime

    return Runtime.get()


def set_threads(threads: int) -> None:
    """Size XNNPACK's thread pool, which is process-wide in ExecuTorch's Python runtime.

    Resizing it after a program has run hangs that program's next call (seen with ExecuTorch 1.5),
    so the size is set before the first program loads and a later, different request is refused.
    """
    global _THREADS
    from executorch.extension.pybindings import portable_lib

    if _THREADS is None:
        portable_lib._unsafe_reset_threadpool(int(threads))
        _THREADS = int(threads)
    elif int(threads) != _THREADS:
        raise ParameterError("threads", f"ExecuTorch's thread pool already has {_THREADS} threads in this process; "
                             f"run .pte files with `threads` {threads} in a separate process")  # fmt: skip


_THREADS: int | None = None


class PteClassifier(ExportedClassifier):
    """A ``.pte`` file behind the interface ``evaluate``/``predict``/``bench`` use: ``model(batch) -> logits``.

    Batches are run one image at a time (the file's input shape is fixed at batch 1).
    """

    kind = ".pte"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ExecuTorch file {self.path} does not exist; make one with `fdmobilenet export`")
        rt = _runtime()
        if threads is not None:
            if threads < 1:
                raise ParameterError("threads", f"`threads` must be >= 1, got {threads}")
            set_threads(threads)
        try:
            with _quiet_fd():
                program = rt.load_program(self.path)
                self._forward = program.load_method("forward")
                stored = program.load_method(META_METHOD).execute([]) if META_METHOD in program.method_names else None
        except Exception as e:  # the runtime raises bare RuntimeErrors for unreadable files
            raise ValueError(f"{self.path} is not a loadable ExecuTorch program ({type(e).__name__}: {e})") from e
        try:
            meta = json.loads(bytes(stored[0].tolist()).decode()) if stored else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{self.path}: its {META_METHOD} metadata is damaged ({e}); re-export the file") from e
        shape = list(self._forward.metadata.input_tensor_meta(0).sizes())
        self.input_shape = shape
        self.num_classes = int(self._forward.metadata.output_tensor_meta(0).sizes()[-1])
        self._set_meta(meta, shape, self.num_classes)

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        return torch.cat([self._forward.execute([x[i : i + 1].contiguous()])[0] for i in range(len(x))])

    def runner(self, batch: int = 1) -> Callable[[], Any]:
        """A zero-argument call running ``batch`` images on a fixed input: what ``bench`` times."""
        r = int(self.meta["resolution"])
        x = torch.randn(1, 3, r, r, generator=torch.Generator().manual_seed(0))
        run = self._forward.execute
        if batch == 1:
            return lambda: run([x])
        return lambda: [run([x]) for _ in range(batch)]
