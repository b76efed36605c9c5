"""Run exported ONNX files (fp32 or INT8) on ONNX Runtime or OpenVINO, with no PyTorch model code.

``OnnxClassifier`` is what ``eval``/``predict`` of an ONNX file and ``bench`` share: the
preprocessing comes from the file's metadata, and the call path hands the runtime the caller's
memory directly (ONNX Runtime IO binding / OpenVINO shared tensors) and lets it write the logits
straight into the array that is returned, so the wrapper adds no copies to what the runtime does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._errors import ParameterError
from .._utils import DEPLOY_HINT, OPENVINO_HINT, require
from .classifier import ExportedClassifier
from .metadata import decode_metadata, read_onnx_metadata

BACKENDS = ("ort", "openvino")  # the runtimes; bench derives its own list (fp32 and int8 per runtime) from it

MEMORY_ENV = "FDM_ORT_MAX_MEMORY"
DEFAULT_MEMORY = "2GiB"  # our exports need well under 1 GiB at batch 64, 224 px; a 400-byte graph asked 3.2 GB
_cap: int | None = None  # the cap registered with ONNX Runtime in this process (once per process)


def memory_cap() -> int:
    """ONNX Runtime's memory cap in bytes: ``$FDM_ORT_MAX_MEMORY`` (``2GiB``, ``512MiB``, bytes), default 2 GiB."""
    from .._utils import parse_size

    text = os.environ.get(MEMORY_ENV) or DEFAULT_MEMORY
    try:
        cap = parse_size(text)
    except ValueError:
        raise ValueError(f"${MEMORY_ENV}={text[:40]!r} is not a size: use bytes or e.g. 4GiB, 512MiB") from None
    if cap < 16 * 2**20:
        raise ValueError(f"${MEMORY_ENV}={text[:40]!r} is under 16 MiB: no model runs in that")
    return cap


def _register_cap(ort: Any) -> int:
    """Every ONNX Runtime session here allocates from one arena with a hard limit (``memory_cap``).

    A graph decides at run time how much memory it asks for: a few hundred bytes of ConstantOfShape can
    ask for gigabytes. With the limit, such a request fails as an error instead of taking the machine.
    """
    global _cap
    if _cap is None:
        cap = memory_cap()
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(cap, -1, -1, -1))
        _cap = cap
    return _cap


def size_text(n: int) -> str:
    """``2 GiB``, ``512 MiB``: a memory cap as people write it."""
    gib = n / 2**30
    return f"{gib:.3g} GiB" if gib >= 1 else f"{n / 2**20:.3g} MiB"


def is_ours(meta: dict[str, Any]) -> bool:
    """Whether an ONNX file's metadata says `fdmobilenet export` wrote it (a claim, not a proof: the memory
    cap applies to every file alike)."""
    return str(meta.get("producer", "")).startswith("fdmobilenet ")


class OnnxClassifier(ExportedClassifier):
    """An exported classifier behind the interface ``evaluate``/``predict`` use: ``model(batch) -> logits``.

    ``threads`` sets ONNX Runtime's intra-op threads / OpenVINO's INFERENCE_NUM_THREADS (default:
    the runtime's own choice). OpenVINO runs float parts in f32 (``INFERENCE_PRECISION_HINT``): on
    CPUs with AVX512-BF16 it would otherwise silently compute "fp32" models in bf16.
    """

    kind = "ONNX"

    def __init__(
        self,
        path: str | os.PathLike,
        backend: str = "ort",
        threads: int | None = None,
        ov_precision: str = "f32",
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file {self.path} does not exist; make one with `fdmobilenet export`")
        if backend not in BACKENDS:
            raise ParameterError("backend", f"`backend` must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if threads is not None and threads < 1:
            raise ParameterError("threads", f"`threads` must be >= 1, got {threads}")
        self.backend, self.threads = backend, threads
        if backend == "ort":
            self._init_ort()
        else:
            self._init_openvino(ov_precision)
        self._set_meta(self.meta, self.input_shape, self.num_classes)

    # -- ONNX Runtime --
    def _init_ort(self) -> None:
        ort = require("onnxruntime", "running ONNX files on ONNX Runtime", DEPLOY_HINT)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4  # its errors come back as exceptions, reworded below; no raw log lines
        if self.threads:
            opts.intra_op_num_threads = self.threads
        self.memory_cap = _register_cap(ort)
        opts.add_session_config_entry("session.use_env_allocators", "1")
        # Constant folding allocates outside the capped arena (up to 1 GiB a node, at load). Our exports are
        # folded by torch.onnx already: without it they ran as fast (fp32, QDQ INT8, detector: within noise).
        opts.add_session_config_entry("optimization.disable_specified_optimizers", "ConstantFolding")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types for unreadable files
            raise ValueError(f"{self.path} is not a loadable ONNX model ({type(e).__name__}: {e})") from e
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_shape = list(inp.shape)
        self.num_classes = out.shape[-1] if isinstance(out.shape[-1], int) else None
        self.meta = decode_metadata(self.session.get_modelmeta().custom_metadata_map)
        self.foreign = not is_ours(self.meta)

    def _ort_run(self, call: Callable[[], Any], batch: int) -> Any:
        """``call()``, with a request over the memory cap reported as what it is and what to do (a ValueError:
        the file or the batch size asked for it, not the machine)."""
        try:
            return call()
        except Exception as e:
            text = str(e)
            if "Available memory of" not in text and "Failed to allocate memory" not in text:
                raise
            whose = "not written by `fdmobilenet export`; " if self.foreign else ""
            raise ValueError(
                f"{self.path}: the graph asked ONNX Runtime for more than the {size_text(self.memory_cap)} memory "
                f"cap at batch {batch} ({whose}set ${MEMORY_ENV}, e.g. 8GiB, if you trust the file, or lower "
                f"the batch size)"
            ) from None

    def _ort_bind(self, x: np.ndarray, y: np.ndarray):
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cpu", 0, np.float32, list(x.shape), x.ctypes.data)
        binding.bind_output(self.output_name, "cpu", 0, np.float32, list(y.shape), y.ctypes.data)
        return binding

    # -- OpenVINO --
    def _init_openvino(self, precision: str) -> None:
        ov = require("openvino", "the OpenVINO backend", OPENVINO_HINT)
        self._ov, self._core = ov, ov.Core()
        self._ov_config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_PRECISION_HINT": precision,
        }
        if self.threads:
            self._ov_config["INFERENCE_NUM_THREADS"] = str(self.threads)
        try:
            model = self._core.read_model(str(self.path))
        except Exception as e:
            raise ValueError(f"OpenVINO cannot read {self.path} ({type(e).__name__}: {e})") from e
        self.input_shape = [d.get_length() if d.is_static else "batch" for d in model.inputs[0].get_partial_shape()]
        out_dim = model.outputs[0].get_partial_shape()[-1]
        self.num_classes = out_dim.get_length() if out_dim.is_static else None
        self.meta = read_onnx_metadata(self.path)
        self._requests: dict[tuple[int, ...], Any] = {}

    def _ov_request(self, shape: tuple[int, ...]):
        """One compiled model per input shape: static shapes are what OpenVINO's CPU plugin runs fastest."""
        req = self._requests.get(shape)
        if req is None:
            model = self._core.read_model(str(self.path))
            model.reshape({model.inputs[0].get_any_name(): list(shape)})
            req = self._core.compile_model(model, "CPU", self._ov_config).create_infer_request()
            self._requests[shape] = req
        return req

    # -- the model interface --
    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for a preprocessed float32 NCHW array; the runtime writes them into a fresh array, no copies."""
        x = np.ascontiguousarray(x, dtype=np.float32)  # no-op for the arrays the transforms produce
        y = np.empty((x.shape[0], self.num_classes or self._probe_classes()), dtype=np.float32)
        if self.backend == "ort":
            self._ort_run(lambda: self.session.run_with_iobinding(self._ort_bind(x, y)), len(x))
        else:
            req = self._ov_request(tuple(x.shape))
            req.set_input_tensor(self._ov.Tensor(x, shared_memory=True))
            req.set_output_tensor(self._ov.Tensor(y, shared_memory=True))
            req.infer()
        return y

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        arr = x.numpy() if isinstance(x, torch.Tensor) else x  # shares memory with a CPU float32 tensor
        return torch.from_numpy(self.run(arr))

    def _probe_classes(self) -> int:
        r = int(self.meta["resolution"])
        if self.backend == "ort":
            feed = {self.input_name: np.zeros((1, 3, r, r), np.float32)}
            out = self._ort_run(lambda: self.session.run([self.output_name], feed), 1)[0]
        else:
            req = self._ov_request((1, 3, r, r))
            req.infer({0: np.zeros((1, 3, r, r), np.float32)})
            out = req.get_output_tensor().data
        self.num_classes = int(out.shape[-1])
        return self.num_classes

    def runner(self, batch: int = 1) -> Callable[[], Any]:
        """A zero-argument call that runs one batch on pre-allocated input/output memory: what ``bench`` times."""
        r = int(self.meta["resolution"])
        x = np.random.default_rng(0).standard_normal((batch, 3, r, r), dtype=np.float32)
        y = np.empty((batch, self.num_classes or self._probe_classes()), dtype=np.float32)
        if self.backend == "ort":
            binding = self._ort_bind(x, y)
            # Default arguments keep x and y alive for as long as the call exists.
            return lambda run=self.session.run_with_iobinding, b=binding, _buffers=(x, y): run(b)
        req = self._ov_request(x.shape)
        req.set_input_tensor(self._ov.Tensor(x, shared_memory=True))
        req.set_output_tensor(self._ov.Tensor(y, shared_memory=True))
        return lambda infer=req.infer, _buffers=(x, y): infer()

    def raw_ort_runner(self, batch: int = 1) -> Callable[[], Any]:
        """The plain ``InferenceSession.run`` a user would write, as the baseline the wrapper must match."""
        if self.backend != "ort":
            raise ValueError("raw_ort_runner needs backend='ort'")
        r = int(self.meta["resolution"])
        feed = {self.input_name: np.random.default_rng(0).standard_normal((batch, 3, r, r), dtype=np.float32)}
        outs, run = [self.output_name], self.session.run
        return lambda: run(outs, feed)
