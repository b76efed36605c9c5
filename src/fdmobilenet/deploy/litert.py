"""LiteRT (TFLite) ``.tflite`` files: fp32, or full-integer INT8 (int8 input and output), the format
microcontroller runtimes (LiteRT for Microcontrollers) and Android take.

Conversion goes through ``litert-torch`` (PyTorch -> StableHLO -> TFLite); INT8 files come from the same
PT2E calibration as ``quantize`` (range equalization, re-rounded weights, bias correction), annotated by
LiteRT's own quantizer, whose scheme is XNNPACK's (int8 weights per channel, int8 activations per tensor).
The metadata ``export`` writes everywhere (model, classes, preprocessing) travels inside the file, as a
TFLite metadata entry named ``fdmobilenet``. ``TfliteClassifier`` runs a file on ``ai-edge-litert``'s
interpreter, quantizing the input and dequantizing the logits with the file's own scales.

litert-torch pins packages our ``constraints.txt`` pins differently (typing-extensions < 4.13 through
xdsl), so the ``litert`` extra goes into its own environment: ``pip install "fdmobilenet[litert]"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._errors import ParameterError
from .._utils import LITERT_HINT, atomic_write_bytes, require
from .classifier import ExportedClassifier
from .fold import fold_batchnorm

META_NAME = "fdmobilenet"  # the TFLite metadata entry holding export's metadata (JSON)
_IDENTIFIER = b"TFL3"


def _schema():
    require("ai_edge_litert", ".tflite files", LITERT_HINT)
    from ai_edge_litert import schema_py_generated as schema

    return schema


def with_metadata(flatbuffer: bytes, meta: dict[str, Any]) -> bytes:
    """``flatbuffer`` (a .tflite model) with ``meta`` as the JSON metadata entry ``fdmobilenet``, replacing one
    already there: TFLite's own place for producer data, which every reader of the format skips over."""
    import flatbuffers

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    model.metadata = [m for m in (model.metadata or []) if m.name not in (META_NAME, META_NAME.encode())]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    model.buffers = [*(model.buffers or []), buffer]
    entry = schema.MetadataT()
    entry.name, entry.buffer = META_NAME, len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_IDENTIFIER)
    return bytes(builder.Output())


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``fdmobilenet`` metadata of a .tflite file (empty for a file ``export`` did not write)."""
    schema = _schema()
    buf = Path(path).read_bytes()
    if len(buf) < 8 or buf[4:8] != _IDENTIFIER:
        raise ValueError(f"{path} is not a .tflite file (no TFL3 identifier); export one with -o model.tflite")
    model = schema.Model.GetRootAs(buf, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == META_NAME.encode():
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            try:
                meta = json.loads(bytes(data).decode()) if isinstance(data, np.ndarray) else {}
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ValueError(f"{path}: its {META_NAME} metadata is damaged ({e}); re-export the file") from e
            if not isinstance(meta, dict):
                raise ValueError(f"{path}: its {META_NAME} metadata is not a JSON object; re-export the file")
            return meta
    return {}


def _convert(module: nn.Module, resolution: int, quantizer: Any = None) -> bytes:
    require("litert_torch", ".tflite export", LITERT_HINT)
    import litert_torch

    kw: dict[str, Any] = {}
    if quantizer is not None:
        from litert_torch.quantize.quant_config import QuantConfig

        kw["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
    if not isinstance(module, torch.fx.GraphModule):  # exported graphs refuse .eval(): they are in eval already
        module = module.eval()
    edge = litert_torch.convert(module, (torch.zeros(1, 3, resolution, resolution),), **kw)
    return bytes(edge.model_content())


def export_tflite(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any], resolution: int = 224) -> None:
    """An fp32 .tflite file (BatchNorm folded, batch 1, NCHW float input as every export takes)."""
    atomic_write_bytes(path, with_metadata(_convert(fold_batchnorm(model), resolution), meta))


def export_quantized_tflite(
    quantized: nn.Module, path: str | os.PathLike, meta: dict[str, Any], resolution: int = 224
) -> None:
    """A full-integer INT8 .tflite (int8 input and logits) from a graph ``calibrate(runtime="litert")`` made."""
    from .quantize import _quantizer

    atomic_write_bytes(path, with_metadata(_convert(quantized, resolution, _quantizer(False, runtime="litert")), meta))


class TfliteClassifier(ExportedClassifier):
    """A .tflite file behind the interface ``evaluate``/``predict`` use: ``model(batch) -> logits``, one image
    at a time (the file's batch is 1). An INT8 file's int8 input and output are quantized and dequantized
    here with the scales stored in the file, so callers pass and get float arrays as for every format."""

    kind = ".tflite"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"LiteRT file {self.path} does not exist; make one with `fdmobilenet export`")
        if threads is not None and threads < 1:
            raise ParameterError("threads", f"`threads` must be >= 1, got {threads}")
        meta = read_metadata(self.path)
        require("ai_edge_litert", ".tflite files", LITERT_HINT)
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._it = Interpreter(model_path=str(self.path), num_threads=threads)
            self._it.allocate_tensors()
        except Exception as e:  # the interpreter raises bare ValueErrors/RuntimeErrors for unreadable files
            raise ValueError(f"{self.path} is not a loadable LiteRT model ({type(e).__name__}: {e})") from e
        self._in, self._out = self._it.get_input_details()[0], self._it.get_output_details()[0]
        self.input_shape = [int(d) for d in self._in["shape"]]
        self.num_classes = int(self._out["shape"][-1])
        self._set_meta(meta, self.input_shape, self.num_classes)

    def _one(self, x: np.ndarray) -> np.ndarray:
        scale, zero = self._in["quantization"]
        if self._in["dtype"] != np.float32:
            info = np.iinfo(self._in["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self._in["dtype"])
        self._it.set_tensor(self._in["index"], x)
        self._it.invoke()
        y = self._it.get_tensor(self._out["index"])
        if self._out["dtype"] != np.float32:
            scale, zero = self._out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, dtype=np.float32)

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        arr = np.ascontiguousarray(x.numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
        return torch.from_numpy(np.concatenate([self._one(arr[i : i + 1]) for i in range(len(arr))]))

    def runner(self, batch: int = 1) -> Callable[[], Any]:
        """A zero-argument call running ``batch`` images on a fixed input: what ``bench`` times."""
        r = int(self.meta["resolution"])
        x = np.random.default_rng(0).standard_normal((batch, 3, r, r), dtype=np.float32)
        return lambda: self(x)
