"""Small helpers every layer uses; nothing here imports from the rest of the package but ``_errors`` and
``_outputs`` (the output policy, which the atomic writer applies last: it never replaces a device node).

Atomic writes (a crash never leaves half a file), optional-dependency errors that name the
extra to install, seed mixing (reproducible per-process/per-epoch streams), figure saving and log
axes labelled with plain numbers, and the machine description that every benchmark result carries.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import importlib.metadata
import math
import os
import platform
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import NamesParameters
from ._outputs import PNG_KEY, refuse_special_file


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Any, Any]:
    """PEP 562 ``__getattr__`` and ``__dir__`` for a package whose public names live in submodules
    (``exports``: name -> submodule), imported on first use: light look-ups never pay for torch."""

    def getattr_(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        import sys

        return sorted([*vars(sys.modules[package]), *exports])

    return getattr_, dir_


DEPLOY_HINT = 'pip install "fdmobilenet[deploy]"'
OPENVINO_HINT = 'pip install "fdmobilenet[openvino]"'
TRAIN_HINT = 'pip install "fdmobilenet[train]"'
LITERT_HINT = (
    'pip install "fdmobilenet[litert]" in an environment of its own (litert-torch pins typing-extensions '
    "below what constraints.txt pins; `make test-litert` makes one)"
)


TEMP_PREFIX = ".fdm-tmp."  # our temporary files, and the only ones ``remove_orphan_temps`` deletes


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename: a crash never leaves half a file. A device
    node, FIFO or socket at ``path`` is refused (a rename would turn it into a regular file); which existing
    regular files a command may replace is decided before its work starts (``_outputs.check_output``)."""
    path = Path(path)
    refuse_special_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename is None:  # a full disk raised by write/fsync names no file: name the one being written
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_if_changed(path: str | os.PathLike, data: bytes) -> None:
    """``atomic_write_bytes`` unless ``path`` already holds ``data``: resuming a finished run writes nothing,
    so it works on a read-only mount."""
    path = Path(path)
    with contextlib.suppress(OSError):
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    atomic_write_bytes(path, data)


def remove_orphan_temps(folder: str | os.PathLike, name: str = "*") -> list[Path]:
    """Delete the ``.fdm-tmp.NAME.XXXXXXXX.tmp`` files ``atomic_write_bytes`` leaves when a process is killed
    mid-write (of ``name``, default: any); another program's ``.tmp`` files are never touched. Call it only
    while no other process writes into ``folder`` (a run holds its lock)."""
    removed = []
    for p in Path(folder).glob(f"{TEMP_PREFIX}{name}.*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


class MissingDependencyError(NamesParameters, ImportError, ValueError):
    """An optional package is missing; the message names the extra that provides it (and the ```parameter```
    that asked for the package, when one did)."""


def require(module: str, purpose: str, hint: str = DEPLOY_HINT) -> Any:
    """Import an optional dependency or raise a MissingDependencyError saying which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{purpose} needs the '{module.split('.')[0]}' package, which is not installed ({e}). "
            f"Install it with: {hint}"
        ) from e


def mix(*xs: int) -> int:
    """A 63-bit seed from several integers (order matters), stable across processes and runs."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (int(x) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plain_log_axis(ax: Any, which: str, values: list[float]) -> None:
    """A log axis labelled with plain numbers at 1-2-5 steps (linear steps when the range is narrow)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    lo, hi = min(values) / 1.15, max(values) * 1.15
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks = [m * 10.0**e for e in decades for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]
    if len(ticks) < 3:
        ticks = [t for t in MaxNLocator(4).tick_values(lo, hi) if lo <= t <= hi and t > 0]
    axis = ax.xaxis if which == "x" else ax.yaxis
    getattr(ax, f"set_{which}scale")("log")
    getattr(ax, f"set_{which}lim")(lo, hi)
    axis.set_ticks(ticks)
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> None:
    """Render a matplotlib figure to PNG, write it atomically and free it. The PNG carries a ``fdmobilenet`` text
    chunk: the mark by which a later run knows it may replace the file (``_outputs``)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={PNG_KEY: "written by fdmobilenet"})
    import matplotlib.pyplot as plt

    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def machine_info() -> dict[str, Any]:
    """CPU model, SIMD flags that decide which kernels run, core count and library versions."""
    cpu, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_flags": [f for f in wanted if f in flags],
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }
    for mod in ("torch", "onnxruntime", "openvino", "onnx", "executorch", "nncf"):
        try:
            info[mod] = importlib.import_module(mod).__version__
        except ImportError:
            info[mod] = None
        except AttributeError:  # executorch has no __version__
            info[mod] = importlib.metadata.version(mod)
    return info


# Sizes as people write them (fit's limits, the ONNX Runtime memory cap).
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kib|kb|k|mib|mb|m|gib|gb|g)?\s*$", re.IGNORECASE)
_UNIT = {"b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2, "mb": 1000**2, "g": 1024**3}
_UNIT.update({"gib": 1024**3, "gb": 1000**3})


def parse_size(text: str | int) -> int:
    """Bytes from ``256KiB``, ``2MiB``, ``300kB`` (1000s), ``262144`` or ``256k`` (k, M, G: binary)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use bytes, or a number with KiB, MiB, kB, MB)")
    return int(float(m.group(1)) * _UNIT[(m.group(2) or "b").lower()])


def format_size(n: int) -> str:
    if n < 1024:
        return f"{n}B"
    if n < 1024**2:
        return f"{n / 1024:.1f}KiB"
    return f"{n / 1024**2:.2f}MiB"


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` (None or 0: left as they are) for the block, then restored: a
    step inside a longer job (scoring a finished run, quantizing its winner) honours the job's ``threads``."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
