"""``fit`` with data: train the leading candidates that fit a device, quantize the winner, report.

``fit`` ranks what fits a device's memory by MACs, a proxy; on the user's photos the candidates are trained
(through ``compare``'s runner: same recipe, seed and resume, ``done.json`` runs kept), the best by validation
top-1 is quantized post-training (``quantize_weights``, calibrated on its run's training photos only) and both
files are scored on the run's seeded hold-out, so the report says what the INT8 file costs in accuracy.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import train as training
from .._errors import ParameterError, ParameterPathError
from .._schema import printable
from .._utils import atomic_write_bytes, torch_threads
from ..data.folders import Folder
from ..data.splits import load_folders, read_split
from ..fit import Candidate, FitResult, binding, format_size
from ..models import RELEASED_WIDTHS, RELEASES
from .choose import choose_recipe
from .compare_classification import count_images
from .config import TrainConfig, make_config
from .runner import Job, run_job

if TYPE_CHECKING:
    from ..deploy.quantize import PtqConfig

FIT_MARKER = ".fdmobilenet-fit"  # written into OUT: only a folder holding it is written into again
REPORT_MD, REPORT_JSON = "fit-report.md", "fit-report.json"
NO_LATENCY = (
    "no latency model: MACs do not predict NPU time (the weights stream from flash); Vela's estimate needs the "
    "Ethos-U export (ethos-u-vela and tosa-tools installed)"
)


def fit_job(c: Candidate, weights: str | None) -> Job:
    """The run of one candidate, at its own resolution, named by it (``fd_mobilenet_025-ft-128px``)."""
    name = f"{c.name}{'-ft' if weights else ''}-{c.resolution}px"
    return Job(c.family, c.macs / 1e6, c.width, 0, c.macs, c.params, weights, resolution=c.resolution, run_name=name)


def _check_out(out: Path) -> None:
    """Refuse an ``out`` holding files that no earlier ``fit`` wrote (they would be mixed with the runs)."""
    if out.exists() and not out.is_dir():
        raise ParameterError("out", f"`out` {out} is a file; give a folder for the runs and the report")
    if out.is_dir() and not (out / FIT_MARKER).exists():
        theirs = sorted(p.name for p in out.iterdir())
        if theirs:
            shown = ", ".join(printable(n)[:60] for n in theirs[:3]) + (
                f" (+{len(theirs) - 3} more)" if len(theirs) > 3 else ""
            )
            raise ParameterError(
                "out", f"`out` {out} holds files this package did not write ({shown}); choose a new or empty `out`"
            )


def released_weights_for(c: Candidate, pretrained_from: str | os.PathLike | None = None) -> str | None:
    """The authors' ImageNet weights for ``c`` when it is a released FD-MobileNet width and they are here
    (``pretrained_from``: ``<name>.safetensors`` or the authors' ``.pth.tar``; else ``$FDM_WEIGHTS``, else the
    local download cache); None: train from scratch. Nothing is downloaded."""
    name = next((n for n, w in RELEASED_WIDTHS.items() if c.family == "fd_mobilenet" and w == c.width), None)
    if name is None:
        return None
    if pretrained_from is not None:
        folder = Path(pretrained_from)
        found = [f for f in (folder / f"{name}.safetensors", folder / RELEASES[name].file) if f.is_file()]
        return str(found[0]) if found else None
    if os.environ.get("FDM_WEIGHTS"):
        path = Path(os.environ["FDM_WEIGHTS"]) / f"{name}.safetensors"
        return str(path) if path.is_file() else None
    from ..models.hub import cache_dir, converted_path
    from ..models.pretrained import released_weights

    if converted_path(name).is_file() or (cache_dir() / "checkpoints" / RELEASES[name].file).is_file():
        return str(released_weights(name, progress=False))  # converts a cached download; checksum verified
    return None


def _hold_out(run_dir: Path, data: str, val_split: float, seed: int, names: list[str] | None):
    """(train photos, hold-out folder): the split the run trained on, scored as ``eval`` with ``split`` does."""
    from ..evaluate import open_eval_data

    record = read_split(run_dir / "split.json")
    split = load_folders(data, val_split, seed, record)
    if not isinstance(split.train, Folder) or not isinstance(split.val, Folder):
        raise ParameterError(
            "data", f"`data` {data} is prepared shards; give the photo folder (INT8 calibrates on photos)"
        )
    # a seeded hold-out as `eval` with `split` scores it; a train/ and val/ layout: val/
    held = open_eval_data(data, names, run_dir) if record is not None else open_eval_data(Path(data) / "val", names)
    return [p for p, _ in split.train.samples], [p for p, _ in split.val.samples], held, split.description


def _score(weights: Path, int8: Path, held, threads: int | None) -> dict[str, Any]:
    """fp32 and INT8 top-1 on the hold-out, and how often the INT8 file names fp32's class."""
    from ..deploy.pipeline import open_exported
    from ..evaluate import evaluate
    from ..models import build_from_weights
    from ..preprocess import Preprocess

    model, meta = build_from_weights(weights)
    r32 = evaluate(model, held, Preprocess.from_meta(meta).transform(), keep_preds=True)
    clf = open_exported(int8, threads=threads)
    r8 = evaluate(clf, held, clf.transform(), keep_preds=True)
    agree = 100.0 * float(np.mean(r32.preds == r8.preds))
    return {
        "photos": r32.n,
        "fp32_top1": round(r32.top1, 2),
        "int8_top1": round(r8.top1, 2),
        "diff": round(r8.top1 - r32.top1, 2),
        "agreement": round(agree, 2),
    }


def _ethosu(
    weights: Path, out: Path, target: str | None, train_photos: list[Path], n: int, log, ptq: PtqConfig | None = None
) -> dict[str, Any]:
    """The Ethos-U ``.pte`` and Vela's estimate when the target is an Ethos-U and its toolchain is installed."""
    from ..deploy.ethosu import export_ethosu, is_ethosu_target, vela_available

    if not target or not is_ethosu_target(target):
        return {"skipped": f"target {target or 'none'} is not an Ethos-U NPU"}
    if importlib.util.find_spec("executorch") is None or not vela_available():
        note = "Ethos-U .pte not written: needs ExecuTorch's Arm backend, ethos-u-vela and tosa-tools (the mcu extra)"
        log(f"[fit] {note}")
        return {"skipped": note}
    import random

    from ..deploy.metadata import export_metadata
    from ..deploy.samples import load_batch
    from ..models import build_from_weights
    from ..preprocess import Preprocess

    model, meta = build_from_weights(weights)
    res = int(meta.get("resolution", 224))
    pre = Preprocess.from_meta(export_metadata(meta, res, model))
    photos = load_batch(sorted(random.Random(0).sample(train_photos, min(n, len(train_photos)))), pre)
    path = out / f"{weights.parent.name}-{target}.pte"
    try:
        vela = export_ethosu(model, path, res, target, list(photos.split(16)), ptq=ptq)
    except (RuntimeError, ValueError, ImportError) as e:  # optional: the ONNX file is the deliverable
        log(f"[fit] Ethos-U export failed: {printable(str(e))[:300]}")
        return {"skipped": f"Ethos-U export failed: {printable(str(e))[:300]}"}
    log(f"[fit] wrote {path}: {vela}")
    return {"path": str(path), "vela": vela.as_dict()}


def fit_to_data(
    result: FitResult,
    data: str | os.PathLike,
    out: str | os.PathLike = "fit-run",
    epochs: int | None = None,
    top: int = 2,
    pretrained_from: str | os.PathLike | None = None,
    recipe: str = "auto",
    overrides: dict[str, Any] | None = None,
    calibration_size: int = 400,
    ptq: PtqConfig | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``result``'s ``top`` leading candidates (the Pareto set's most MACs) on ``data``, quantize the best
    by validation top-1 to ``OUT/<run>-int8.onnx`` and write ``OUT/fit-report.md`` and ``.json``; returns the report.

    ``epochs`` None: the recipe's (``auto``: ``small`` below 25,600 training images, as ``train`` picks).
    Released FD-MobileNet widths fine-tune from the authors' weights when found (``released_weights_for``).
    ``overrides`` are training settings every run shares (``threads``, ``batch_size``, ``val_split``, ...);
    ``ptq`` a ``deploy.quantize.PtqConfig`` (default: ``quantize``'s).
    """
    from ..deploy.pipeline import quantize_weights

    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ParameterError("top", f"`top` must be a whole number >= 1 (candidates to train), got {top!r}")
    if not result.front:
        raise ParameterError("result", "nothing fits the limits: raise a limit or search smaller widths or resolutions")
    if not Path(data).is_dir():
        raise ParameterPathError("data", f"`data` {data} does not exist; give a folder of class folders")
    out = Path(out)
    _check_out(out)
    overrides = dict(overrides or {})
    val_split = overrides.get("val_split", TrainConfig.val_split)
    make_config({**overrides, "data": str(data), "out": str(out), **({"epochs": epochs} if epochs else {})})
    n_train, n_val = count_images(str(data), val_split)
    if recipe == "auto":
        recipe, why = choose_recipe(str(data), val_split, task="classification", n_train=n_train)
        log(f"[fit] recipe {recipe} (auto: {why})")
    recipe_cfg = training.load_recipe(recipe)
    if epochs is None:
        epochs = int(recipe_cfg.get("epochs", TrainConfig.epochs))
        log(f"[fit] {epochs} epochs a run (the recipe's; `epochs` to choose)")
    out.mkdir(parents=True, exist_ok=True)
    (out / FIT_MARKER).write_text("written by the fit of fdmobilenet: its runs, INT8 file and report may be replaced\n")
    candidates = result.front[:top]
    jobs = []
    for c in candidates:
        weights = released_weights_for(c, pretrained_from)
        jobs.append(fit_job(c, weights))
        how = f"fine-tuned from {weights}" if weights else "from scratch (no ImageNet weights for it here)"
        log(f"[fit] {jobs[-1].name}: {c.macs / 1e6:.1f} MMACs, SRAM {format_size(c.sram)}, {how}")
    base = {**overrides, "data": str(data), "epochs": epochs}
    rows = [run_job(j, base, recipe, out, 3, log) for j in jobs]
    best = max(range(len(jobs)), key=lambda i: rows[i]["top1"])
    winner, run_dir = jobs[best], out / "runs" / jobs[best].name
    weights = run_dir / "best.safetensors"
    from ..weights import read_weights

    names = read_weights(weights)[1].get("class_names")
    train_photos, val_photos, held, split_text = _hold_out(run_dir, str(data), val_split, winner.seed, names)
    int8 = out / f"{winner.name}-int8.onnx"
    log(f"[fit] winner {winner.name} (val top-1 {rows[best]['top1']:.2f}%): quantizing to {int8}")
    threads = overrides.get("threads")
    with torch_threads(threads):
        (q,) = quantize_weights(weights, data, int8, calibration_size=calibration_size, ptq=ptq, exclude=val_photos)
        scores = _score(weights, int8, held, threads)
        ethos = _ethosu(weights, out, result.limits.device and result.limits.device.npu, train_photos,
                        calibration_size, log, ptq)  # fmt: skip
    vela_ms = (ethos.get("vela") or {}).get("inference_ms")
    report = {
        "limits": result.as_dict()["limits"],
        "data": str(data),
        "split": split_text,
        "recipe": Path(recipe).stem,
        "epochs": epochs,
        "candidates": [_candidate_row(j, c, r, result) for j, c, r in zip(jobs, candidates, rows, strict=True)],
        "winner": winner.name,
        "int8_file": str(int8),
        "quantization": q.meta.get("quantization"),
        "hold_out": scores,
        "ethos_u": ethos,
        "latency": {"vela_inference_ms": vela_ms, "note": None if vela_ms is not None else NO_LATENCY},
    }
    atomic_write_bytes(out / REPORT_JSON, json.dumps(report, indent=1).encode())
    atomic_write_bytes(out / REPORT_MD, render_report(report).encode())
    log(
        f"[fit] hold-out ({scores['photos']} photos): fp32 top-1 {scores['fp32_top1']:.2f}%, INT8 "
        f"{scores['int8_top1']:.2f}% ({scores['diff']:+.2f}), agreement {scores['agreement']:.1f}%"
    )
    log(f"[fit] wrote {int8}, {out / REPORT_MD}, {out / REPORT_JSON}")
    return report


def _candidate_row(job: Job, c: Candidate, row: dict[str, Any], result: FitResult) -> dict[str, Any]:
    """A trained candidate as the report lists it: what it is, what it costs, what binds it, how it scored."""
    return {
        "run": job.name, "name": c.name, "family": c.family, "width": c.width, "resolution": c.resolution,
        "macs": c.macs, "params": c.params, "sram": c.sram, "flash": c.flash, "binds": binding(c, result.limits),
        "pretrained": job.pretrained, "val_top1": row["top1"],
    }  # fmt: skip


def render_report(r: dict[str, Any]) -> str:
    """``fit-report.md``: the candidates trained, the winner, fp32 vs INT8 on the hold-out, memory, latency."""
    lim = r["limits"]
    told = [f"target {lim['target']}"] if lim.get("target") else []
    told += [f"{k} {format_size(lim[k])}" for k in ("sram", "flash") if lim.get(k)]
    told += [f"{lim['mmacs']:g} MMACs"] if lim.get("mmacs") else []
    h = r["hold_out"]
    lines = [
        "# fit report",
        "",
        f"Limits: {'; '.join(told)}. Data: {printable(r['data'])} ({printable(r['split'])}); recipe {r['recipe']}, "
        f"{r['epochs']} epochs a run.",
        "",
        "| run | model | width | res | MMACs | params | INT8 SRAM | INT8 flash | binds | start | val top-1 % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in r["candidates"]:
        start = "ImageNet weights" if c["pretrained"] else "scratch"
        lines.append(
            f"| {c['run']} | {c['name']} | {c['width']:g} | {c['resolution']} | {c['macs'] / 1e6:.2f} | "
            f"{c['params']:,} | {format_size(c['sram'])} | {format_size(c['flash'])} | {c['binds']} | {start} | "
            f"{c['val_top1']:.2f} |"
        )
    lines += [
        "",
        f"Winner: **{r['winner']}** (highest val top-1). Deployable INT8 file: `{printable(r['int8_file'])}` "
        f"(ONNX QDQ, post-training, calibrated on the run's training photos).",
        "",
        f"On the hold-out ({h['photos']} photos the runs never trained on):",
        "",
        "| | top-1 % |",
        "|---|---|",
        f"| fp32 (best.safetensors) | {h['fp32_top1']:.2f} |",
        f"| INT8 (.onnx) | {h['int8_top1']:.2f} |",
        f"| INT8 - fp32 | {h['diff']:+.2f} |",
        f"| INT8 names fp32's class | {h['agreement']:.2f} % of photos |",
        "",
    ]
    eu = r["ethos_u"]
    lines.append(f"Ethos-U: `{printable(eu['path'])}`." if "path" in eu else f"Ethos-U: {eu['skipped']}.")
    lat = r["latency"]
    if lat["vela_inference_ms"] is not None:
        lines.append(f"Latency: {lat['vela_inference_ms']:.3f} ms, Vela's estimate (its performance model).")
    else:
        lines.append(f"Latency: {lat['note']}.")
    return "\n".join(lines) + "\n"
