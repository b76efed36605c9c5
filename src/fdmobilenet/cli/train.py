"""``fdmobilenet train``: one flag per ``TrainConfig`` field, generated from the dataclass (grouped by its
``SECTIONS``), so the command line, recipes and YAML files share one list of settings."""

from __future__ import annotations

import argparse
import os
import typing
from pathlib import Path
from typing import Any

from .. import _schema
from .._errors import NamesParameters
from ..models import read_pretrained
from ..train import RECIPES, TrainConfig, choose_recipe, finetune_lr, load_recipe, make_config, train
from ..train.choose import data_task, model_for_data
from ..train.config import FIELDS, SECTIONS, check_fields
from . import flag_of

_HINTS = typing.get_type_hints(TrainConfig)


def train_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, in one argument group per ``SECTIONS`` entry, as timm's train.py
    groups its flags (only flags given on the command line override the recipe)."""
    p.add_argument(
        "--recipe",
        help=f"auto | {' | '.join(RECIPES)} | FILE.yaml (default: auto with --data: paper for 25,600 or more "
        "training images, else small; digits without --data)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    for title, names in SECTIONS.items():
        group = p.add_argument_group(title)
        for name in names:
            _add_field(group, name)
    p.description = (
        f"{p.description or ''}. The defaults shown are the paper's ImageNet recipe. A recipe replaces some "
        "of them: with --data, auto (the paper's for 25,600 or more training images, else small); without "
        "--data, digits (the built-in demo data). Every flag given overrides both; the effective "
        "configuration is written to OUT/config.json."
    )
    p.epilog = "Many GPUs or nodes: torchrun --nproc_per_node N -m fdmobilenet.cli train ... (see docs/training.md)"


def _add_field(group: argparse._ArgumentGroup, name: str) -> None:
    """``--NAME`` for TrainConfig field ``name``: its type, choices and help from the dataclass."""
    f, tp = FIELDS[name], _HINTS[name]
    shown = " ".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
    default = "" if f.default is None else f" [default: {shown}]"
    kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": f.metadata["help"] + default, "dest": name}
    if tp in (bool, bool | None):
        kw["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        kw.update(type=float, nargs="+" if Ellipsis in args else len(args), metavar="X")
    else:
        kw["type"] = next(t for t in typing.get_args(tp) or (tp,) if t is not type(None))
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
    group.add_argument("--" + name.replace("_", "-"), **kw)


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    """(config, recipe name): defaults, then the recipe, then the flags given; on --resume the run's
    saved config replaces defaults and recipe. ``--pretrained`` alone also picks the weights' model."""
    given = {k: v for k, v in vars(args).items() if k in FIELDS}
    check_fields(given)  # every number finite and in range before a recipe, the data or a run is read
    recipe_name = args.recipe or ("auto" if "data" in given else "digits")
    recipe = {} if recipe_name == "auto" else load_recipe(recipe_name)
    saved = Path(given.get("out") or recipe.get("out") or TrainConfig.out) / "config.json"
    if args.resume and saved.is_file():
        try:
            base = _schema.saved_config(_schema.read_json(saved, 2**20, "config.json"), saved)
            saved_cfg = make_config({k: v for k, v in base.items() if k != "recipe"})
        except ValueError as e:
            said = e.render(flag_of) if isinstance(e, NamesParameters) else str(e)
            where = "" if said.startswith(str(saved)) else f"{saved}: "
            raise ValueError(f"{where}{said}; restore it, or train into another --out") from None
        cfg = make_config(given, saved_cfg)
        changed = [k for k in given if getattr(cfg, k) != getattr(saved_cfg, k)]
        for k in changed:  # the run's plan changes only when asked, and says so
            _say(f"resume: {flag_of(k)} changes from {getattr(saved_cfg, k)} to {getattr(cfg, k)} (asked for)")
        return cfg, base["recipe"]
    task = data_task(given["data"]) if "data" in given else None  # the layout is probed once, here
    if recipe_name == "auto":
        recipe_name = _auto_recipe(given, task)
        recipe = load_recipe(recipe_name)
    if given.get("pretrained") and "lr" not in given and args.recipe in (None, "auto") and recipe_name != "detection":
        given["lr"] = finetune_lr(recipe)
        _say(f"fine-tuning --pretrained weights: lr {given['lr']:.4g} (a tenth of the recipe's; --lr sets it)")
    if given.get("pretrained") and "model" not in given:
        _, meta, model = read_pretrained(given["pretrained"])
        given["model"] = model
        for k, v in meta.get("model_kwargs", {}).items():
            given.setdefault(k, v)
    cfg = make_config(given, make_config(recipe))
    cfg, note = model_for_data(cfg, task)
    if note:
        _say(note)
    return cfg, recipe_name


def _auto_recipe(given: dict[str, Any], task: str | None) -> str:
    """``--recipe auto``: paper or small, from the number of training images (printed with the reason)."""
    if "data" not in given:
        raise ValueError("--recipe auto chooses from the size of --data; pass --data DIR or another --recipe")
    name, why = choose_recipe(given["data"], given.get("val_split", TrainConfig.val_split), task=task)
    picked = [k for k in ("model", "epochs") if k in RECIPES[name] and k not in given]
    sized = [f"{flag_of(k)} {RECIPES[name][k]}" for k in picked if not (k == "model" and given.get("pretrained"))]
    sized_note = f"; {' and '.join(sized)} from it (give them to choose)" if sized else ""
    _say(f"recipe {name} (auto: {why}){sized_note}")
    return name


def _say(message: str) -> None:
    """Print once per run (rank 0 under torchrun), before the engine's own log starts."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(message, flush=True)


def train_run(args: argparse.Namespace) -> int:
    """Train; the exit code is the run's (0, 128 + signal after a checkpointed stop, 3 on divergence)."""
    cfg, recipe = config_from_args(args)
    result = train(cfg, resume=args.resume, recipe=recipe)
    if result.error is not None:
        raise result.error  # main prints it and exits with its code
    return result.exit_code
