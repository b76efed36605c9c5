"""LiteRT (TFLite) probe: can FD-MobileNet be converted with litert-torch and run on LiteRT's XNNPACK delegate?

Not part of the package yet: litert-torch brings JAX and transformers (a 6.6 GB venv), too heavy for the
dev extra, so this runs in a separate venv (docs/deployment.md, "LiteRT"):

    python3 -m venv /tmp/litert && /tmp/litert/bin/pip install torch==2.14.1 torchvision==0.29.1 \\
        litert-torch==0.10.0 ai-edge-litert==2.3.0 safetensors
    /tmp/litert/bin/python benchmarks/litert_probe.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import fdmobilenet as fdm  # noqa: E402
from fdmobilenet.deploy.fold import fold_batchnorm  # noqa: E402


def main() -> None:
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    x = torch.randn(1, 3, 224, 224)
    for name in ("fd_mobilenet_025", "fd_mobilenet_050"):
        model = fold_batchnorm(fdm.create_model(name).eval())
        path = Path(tempfile.mkdtemp()) / f"{name}.tflite"
        t = time.monotonic()
        litert_torch.convert(model, (x,)).export(str(path))
        convert_s = time.monotonic() - t
        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        it.set_tensor(inp["index"], x.numpy())
        it.invoke()
        diff = float(np.abs(it.get_tensor(out["index"]) - model(x).detach().numpy()).max())
        for _ in range(20):
            it.invoke()
        times = []
        for _ in range(200):
            t = time.perf_counter()
            it.invoke()
            times.append((time.perf_counter() - t) * 1000)
        print(f"{name}: converted in {convert_s:.1f} s; max |logit diff| vs PyTorch {diff:.1e}; "
              f"{np.median(times):.3f} ms median (1 thread, batch 1, random weights)")  # fmt: skip


if __name__ == "__main__":
    main()
