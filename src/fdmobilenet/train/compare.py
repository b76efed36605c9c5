"""``fdmobilenet compare``: the paper's experiment on your data, in one command.

Every (family, budget) pair gets the width whose multiply-adds meet the budget, then trains with the same
recipe and seeds; the score (mean ± sd over seeds) is reported against MFLOPs, with a paired-bootstrap verdict
on each pair of families per budget (``verdicts``). Settings given as ``overrides`` (a ``teacher`` to distil
from, the input pipeline, ...) apply to every run alike. Runs go through the experiment runner (``runner``):
finished runs are kept (``done.json`` in their folder) and skipped on a re-run; an interrupted run resumes.

What differs by task is a plug-in chosen from the data once (``choose.data_task``): class folders compare
classifiers by top-1 (``compare_classification``), photos with boxes compare SSDLite detectors by mAP@0.5 at
backbone budgets (``compare_detection``). This module holds no task's knowledge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import train as training  # noqa: F401 - tests replace ``training.train`` through this name
from .choose import data_task
from .compare_classification import ClassificationCompare, count_images, plan
from .compare_detection import DetectionCompare, plan_detection
from .compare_report import CompareTask, check_plan, default_seeds, summarise, write_reports
from .config import TrainConfig, make_config
from .runner import Job, RunStopped, run_job
from .verdicts import MISSING, MISSING_DETECTIONS, verdicts

COMPARES: dict[str, type[CompareTask]] = {"classification": ClassificationCompare, "detection": DetectionCompare}

__all__ = [
    "COMPARES", "Job", "RunStopped", "check_plan", "compare", "count_images", "default_seeds", "plan",
    "plan_detection", "summarise", "write_reports",
]  # fmt: skip


def compare(
    data: str,
    budgets: list[float],
    families: list[str],
    out: str | Path,
    resolution: int | None = None,
    epochs: int | None = None,
    seeds: int | None = None,
    recipe: str = "auto",
    groups: int = 3,
    pretrained_from: str | None = None,
    overrides: dict[str, Any] | None = None,
    log=print,
    backbones: str | Path | None = None,
    extra_rows: dict[str, str] | list[str] | None = None,
) -> list[dict[str, Any]]:
    """Train every (family, budget, seed) and write the reports; returns the summary rows.

    ``resolution`` None: 224 for classifiers; for detection data the detectors' (the recipe's, 320), the
    backbone widths being solved at 224 px whatever it is. ``epochs`` None: 10 for classifiers, the recipe's for
    detectors. ``seeds`` None: 3 on small data (below the paper recipe's 25,600 training images), else 1 (the log
    says why). ``backbones`` (a folder of classification weights, see ``backbones``) and ``extra_rows``
    ({name: weights file}) are for detection data only.
    """
    out = Path(out)
    check_plan(budgets, families, seeds)  # before the images are counted
    given = {"epochs": epochs, "resolution": resolution, "groups": groups, **(overrides or {}), "data": str(data)}
    make_config({k: v for k, v in given.items() if v is not None} | {"out": str(out)})  # checked now, not per run
    task = COMPARES[data_task(data)]()
    options = {"backbones": backbones, "extra_rows": extra_rows}
    task.check_options(data, options)
    val_split = (overrides or {}).get("val_split", TrainConfig.val_split)
    setup = task.setup(data, val_split, recipe, seeds, resolution, epochs, log)
    jobs = task.plan(budgets, families, setup, groups, pretrained_from, options, log)
    base = {"data": data, "resolution": setup.resolution, "epochs": setup.epochs, **(overrides or {})}
    log(f"[compare] {len(jobs)} runs: {', '.join(j.name for j in jobs)}")
    notes = task.notes(jobs, options, log)
    rows = [run_job(j, base, setup.recipe, out, groups, log) for j in jobs]
    summary = summarise(task, rows)
    runs: dict[tuple[str, float], dict[int, Path]] = {}
    for job, row in zip(jobs, rows, strict=True):
        runs.setdefault((row["family"], job.budget), {})[job.seed] = out / "runs" / job.name
    found = verdicts(runs, first=task.first, task=task.name)
    means = {(r["family"], r["budget_mflops"]): r["mean"] for r in summary}
    for v in found:
        if v["diff"] is None and v["verdict"] in (MISSING, MISSING_DETECTIONS):  # the difference of the means
            v["diff"] = round(means[(v["a"], v["budget"])] - means[(v["b"], v["budget"])], 2)
    split = task.split(data, val_split, setup, [out / "runs" / j.name for j in jobs], found)
    d = Path(data)
    name = f"{d.parent.name}/{d.name}" if d.name in ("train", "images", "data") else d.name
    write_reports(task, summary, out, task.title(name, setup, options), split, found, notes)
    log(f"[compare] wrote {out}/results.md, results.csv, results.json, {task.plot_file}")
    for v in found:
        interval = f" [{v['lo']:+.2f}, {v['hi']:+.2f}]" if v["lo"] is not None else ""
        diff = f"{v['diff']:+.2f} {task.points}{interval}: " if v["diff"] is not None else ""
        log(f"[compare] {v['budget']:g} MFLOPs, {v['a']} vs {v['b']}: {diff}{v['verdict']}")
    return summary
