"""``fit``: which family, width and resolution fit a device's memory, ranked by compute.

Every candidate (family × width × resolution) is profiled on the ``meta`` device (shapes only, nothing
computed) for its INT8 memory (``complexity.profile``): peak activations against the device's SRAM,
weights against its flash. Those that fit are ranked by MACs, the accuracy proxy of the 10-150 MFLOPs
class (more compute, more accuracy, within a family and across the paper's three), and the Pareto set
(no other fitting candidate has more MACs with no more SRAM and no more flash) is what ``fit`` prints.

There is no latency model: MACs do not predict NPU time (Vela puts FD-MobileNet 0.25x at 128 px at
1.0 ms on an Ethos-U55-128, 16x its MAC-bound time: the weights stream from flash), so latency comes from
the toolchain itself: ``estimate`` asks Vela for one candidate (``fit --estimate N`` / ``--max-latency``).

Profiles are cached in ``$XDG_CACHE_HOME/fdmobilenet/fit-<version>.json`` (``~/.cache``): the first
search builds a few hundred models on the meta device, later ones read the file.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import __version__
from ._errors import ParameterError
from ._utils import atomic_write_bytes, format_size, parse_size  # noqa: F401 - format_size: part of fit's API


@dataclass(frozen=True)
class Device:
    """A target's memory and clock. ``sram`` and ``flash`` are bytes (None: no limit); ``source`` says where
    each number comes from."""

    name: str
    description: str
    sram: int | None
    flash: int | None
    clock_mhz: int
    npu: str | None
    source: str


KiB, MiB = 1024, 1024 * 1024

# The RAM figure is what the model's activations may take: the TCM or SRAM bank next to the core. The
# runtime, its stack and any frame buffers need RAM too; pass --max-sram to leave room for them.
DEVICES: dict[str, Device] = {
    d.name: d
    for d in (
        Device(
            "ethos-u55-128",
            "Alif Ensemble E7 high-efficiency subsystem (RTSS-HE): Cortex-M55 + Ethos-U55-128",
            256 * KiB,
            int(5.5 * MiB),
            160,
            "ethos-u55-128",
            "SRAM: the HE core's 256 KB DTCM (SRAM5) and 160 MHz clock, Alif white paper 'RAM Regions and Linker "
            "Files in Alif Microcontrollers' (alifsemi.com/whitepaper/alif-mcu-ram-regions-and-linker-files); "
            "flash: the E7's 5.5 MB MRAM, Alif Ensemble E7 datasheet",
        ),
        Device(
            "ethos-u55-256",
            "Alif Ensemble E7 high-performance subsystem (RTSS-HP): Cortex-M55 + Ethos-U55-256",
            1024 * KiB,
            int(5.5 * MiB),
            400,
            "ethos-u55-256",
            "SRAM: the HP core's 1 MB DTCM (SRAM3) and 400 MHz clock, Alif white paper 'RAM Regions and Linker "
            "Files in Alif Microcontrollers'; flash: the E7's 5.5 MB MRAM, Alif Ensemble E7 datasheet",
        ),
        Device(
            "ethos-u65-256",
            "Ethos-U65-256 as Vela's Ethos_U65_High_End system (weights and feature maps in DRAM, 384 KB SRAM cache)",
            384 * KiB,
            None,
            1000,
            "ethos-u65-256",
            "Vela's vela.ini (ethos-u-vela 5.2.0, the configuration ExecuTorch's Arm backend passes): system "
            "Ethos_U65_High_End, 1 GHz core clock, memory mode Dedicated_Sram_384KB; flash: DRAM, no limit",
        ),
        Device(
            "cortex-m55",
            "Cortex-M55 without NPU: the Alif Ensemble E7 high-efficiency core (CMSIS-NN kernels)",
            256 * KiB,
            int(5.5 * MiB),
            160,
            None,
            "as ethos-u55-128: Alif white paper 'RAM Regions and Linker Files in Alif Microcontrollers'; Alif "
            "Ensemble E7 datasheet",
        ),
        Device(
            "cortex-m7",
            "STM32F746 (Cortex-M7, MCUNet's board)",
            320 * KiB,
            1 * MiB,
            216,
            None,
            "ST STM32F746xx datasheet (DS10916): 216 MHz, 1 MB flash, 320 KB RAM",
        ),
        Device(
            "cortex-m7-h7",
            "STM32H743 (Cortex-M7)",
            1 * MiB,
            2 * MiB,
            480,
            None,
            "ST STM32H743xI datasheet (DS12110): 480 MHz, 2 MB flash, 1 MB RAM",
        ),
        Device(
            "cortex-m4",
            "STM32F412 (Cortex-M4, MCUNet's smaller board)",
            256 * KiB,
            1 * MiB,
            100,
            None,
            "ST STM32F412xE/G datasheet (DS11139): 100 MHz, 1 MB flash, 256 KB RAM",
        ),
        Device(
            "nrf52840",
            "nRF52840 (Cortex-M4F; Arduino Nano 33 BLE Sense, TFLite Micro's reference board)",
            256 * KiB,
            1 * MiB,
            64,
            None,
            "Nordic nRF52840 product specification: 64 MHz, 1 MB flash, 256 KB RAM",
        ),
    )
}

FIT_FAMILIES = (
    "fd_mobilenet",
    "mobilenet_v1",
    "shufflenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "shufflenet_v2",
)
FIT_WIDTHS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)  # the released widths are on this grid
FIT_RESOLUTIONS = (96, 128, 160, 192, 224)


@dataclass(frozen=True)
class Candidate:
    """One (family, width, resolution) and its INT8 cost: ``sram`` peak activations, ``flash`` weights."""

    family: str
    width: float
    resolution: int
    macs: int
    params: int
    sram: int
    flash: int
    sram_nhcwb16: int = 0  # ``sram`` with feature maps in Ethos-U's NHCWB16 layout (channels padded to 16)

    @property
    def name(self) -> str:
        """The registered name where the width has one (``fd_mobilenet_025``), else ``family@width``."""
        from .models._registry import list_models, lookup

        for n in list_models(f"{self.family}_*"):
            fam, fixed = lookup(n)
            if fam == self.family and fixed.get("width") == self.width and fixed.get("groups", 3) == 3:
                return n
        return f"{self.family}@{self.width:g}"


def _cache_path() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "fdmobilenet" / f"fit-{__version__}-2.json"  # -2: profiles carry the NHCWB16 peak


def profile_candidates(
    families: Sequence[str] = FIT_FAMILIES,
    widths: Sequence[float] = FIT_WIDTHS,
    resolutions: Sequence[int] = FIT_RESOLUTIONS,
    cache: bool = True,
) -> list[Candidate]:
    """Every (family, width, resolution), profiled on the meta device (cached on disk when ``cache``).

    ShuffleNet V1 is its paper's g=3; a width a family cannot build is skipped.
    """
    import torch

    from .complexity import profile
    from .models import FAMILIES, family_kwargs
    from .models._builder import build_model

    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown family {unknown[0]!r}; fit searches {', '.join(FAMILIES)}")
    path = _cache_path()
    stored: dict[str, list | None] = {}
    if cache and path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
    out, changed = [], False
    for fam in families:
        for w in widths:
            model = None
            for res in resolutions:
                key = f"{fam}|{w:g}|{res}"
                if key not in stored:
                    try:
                        if model is None:
                            with torch.device("meta"):
                                model = build_model(fam, width=w, **family_kwargs(fam))
                        p = profile(model, res)
                        stored[key] = [p.macs, p.params, p.int8_peak_activation_bytes, p.int8_weight_bytes,
                                       p.int8_peak_nhcwb16_bytes]  # fmt: skip
                    except (ValueError, RuntimeError):  # a width whose channels the family cannot split
                        stored[key] = None
                    changed = True
                if stored[key] is not None:
                    out.append(Candidate(fam, w, res, *stored[key]))
    if cache and changed:
        with contextlib.suppress(OSError):  # a read-only home: search again next time
            atomic_write_bytes(path, json.dumps(stored, indent=0).encode())
    return out


@dataclass(frozen=True)
class Limits:
    """What a candidate must stay within (None: no limit); ``device`` names the preset they came from."""

    sram: int | None = None
    flash: int | None = None
    mmacs: float | None = None
    device: Device | None = None


def limits_for(
    target: str | None = None,
    max_sram: str | int | None = None,
    max_flash: str | int | None = None,
    max_mmacs: float | None = None,
) -> Limits:
    """A device preset's limits, each overridden by the explicit one given."""
    device = None
    if target is not None:
        if target not in DEVICES:
            raise ParameterError("target", f"unknown `target` {target!r}; one of {', '.join(DEVICES)} (`list_targets`)")
        device = DEVICES[target]
    sram = parse_size(max_sram) if max_sram is not None else (device.sram if device else None)
    flash = parse_size(max_flash) if max_flash is not None else (device.flash if device else None)
    if max_mmacs is not None and max_mmacs <= 0:
        raise ValueError(f"max_mmacs must be > 0, got {max_mmacs}")
    if sram is None and flash is None and max_mmacs is None:
        raise ValueError("give a target or at least one of max_sram, max_flash, max_mmacs")
    return Limits(sram, flash, max_mmacs, device)


def ethos_u(limits: Limits) -> str | None:
    """The device's Ethos-U NPU (its Vela target name), else None: an Ethos-U keeps feature maps in NHCWB16,
    so its SRAM is counted that way, and Vela can estimate its time."""
    from .deploy.ethosu import is_ethosu_target

    npu = limits.device.npu if limits.device else None
    return npu if npu and is_ethosu_target(npu) else None


def usage(c: Candidate, limits: Limits) -> dict[str, float]:
    """The fraction of each limit ``c`` uses."""
    used = {}
    if limits.sram:
        used["sram"] = c.sram / limits.sram
    if limits.flash:
        used["flash"] = c.flash / limits.flash
    if limits.mmacs:
        used["mmacs"] = c.macs / 1e6 / limits.mmacs
    return used


def binding(c: Candidate, limits: Limits) -> str:
    """The limit ``c`` comes closest to, with the share it uses (``sram 94%``)."""
    used = usage(c, limits)
    key = max(used, key=used.get)
    return f"{key} {used[key]:.0%}"


def pareto(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Those no other candidate beats: more MACs with no more SRAM and flash (ties kept once), by MACs."""
    ranked = sorted(candidates, key=lambda c: (-c.macs, c.sram, c.flash))
    front: list[Candidate] = []
    for c in ranked:
        if not any(f.macs >= c.macs and f.sram <= c.sram and f.flash <= c.flash for f in front):
            front.append(c)
    return front


@dataclass
class FitResult:
    limits: Limits
    searched: int
    fitting: list[Candidate]
    front: list[Candidate]
    best_per_family: dict[str, Candidate]
    activations: str = "int8"  # "int16": A16W8, SRAM counted at 2 bytes an activation

    def as_dict(self) -> dict:
        def row(c: Candidate) -> dict:
            return {**asdict(c), "name": c.name, "binds": binding(c, self.limits)}

        lim = {k: v for k, v in asdict(self.limits).items() if k != "device"}
        lim["target"] = self.limits.device.name if self.limits.device else None
        return {
            "limits": lim,
            "activations": self.activations,
            "searched": self.searched,
            "fitting": len(self.fitting),
            "pareto": [row(c) for c in self.front],
            "best_per_family": {f: row(c) for f, c in self.best_per_family.items()},
        }


def fit(
    limits: Limits,
    families: Sequence[str] = FIT_FAMILIES,
    widths: Sequence[float] = FIT_WIDTHS,
    resolutions: Sequence[int] = FIT_RESOLUTIONS,
    cache: bool = True,
    activations: str = "int8",
) -> FitResult:
    """The candidates within ``limits``: their Pareto set (MACs up, SRAM and flash down) and each family's
    largest (most MACs) that fits. ``activations`` ``int16`` (A16W8, ``quantize --activations int16``):
    activations take 2 bytes (Vela: 224.6 vs 112.6 KiB for FD-MobileNet 0.25x at 128 px), weights 1."""
    from .deploy.quantize import check_activations

    check_activations(activations)
    cands = profile_candidates(families, widths, resolutions, cache=cache)
    if activations == "int16":
        cands = [replace(c, sram=2 * c.sram, sram_nhcwb16=2 * c.sram_nhcwb16) for c in cands]
    if ethos_u(limits):  # what Vela plans: within 1 % (benchmarks/mcu/results.md); unpadded is 1-100 % short
        cands = [replace(c, sram=c.sram_nhcwb16) for c in cands]
    fitting = [c for c in cands if all(u <= 1 for u in usage(c, limits).values())]
    best: dict[str, Candidate] = {}
    for c in sorted(fitting, key=lambda c: (-c.macs, c.sram)):
        best.setdefault(c.family, c)
    return FitResult(limits, len(cands), fitting, pareto(fitting), best, activations)


def estimate(c: Candidate, target: str, activations: str = "int8"):
    """Vela's plan for ``c`` lowered to INT8 (or A16W8) for the Ethos-U ``target`` (``deploy.ethosu.VelaReport``:
    time at its clock, SRAM, flash, operators). Random weights and calibration: time and memory depend on shapes only.
    About 30 s a candidate on one core; needs the ``mcu`` extra."""
    import torch

    from .deploy.ethosu import lower_ethosu
    from .models import family_kwargs
    from .models._builder import build_model

    torch.manual_seed(0)
    model = build_model(c.family, width=c.width, **family_kwargs(c.family)).eval()
    return lower_ethosu(model, c.resolution, target, activations=activations)[1]
