"""The ``fdmobilenet`` command: one command table, each command's module imported only when it runs.

``fdmobilenet --help`` therefore imports neither torch nor any command module. Argument parsing
lives here and in the ``cli/<group>.py`` modules only; each calls one library function.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__

# name -> (help, module cli/MODULE.py defining NAME_arguments(parser) and NAME_run(args) -> exit code)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("list the registered models with MACs and parameters at 224 px", "models"),
    "profile": ("MACs, parameters and peak activation memory (optionally per layer)", "models"),
    "convert": ("convert the authors' weights to safetensors with metadata", "models"),
    "eval": ("top-1/top-5 of weights on an image folder", "evaluate"),
    "predict": ("top-k classes of image files", "evaluate"),
    "train": ("train or fine-tune a model on an image folder", "train"),
    "export": ("export to ONNX (fp32 / INT8 QDQ), TorchScript or pt2, checked against PyTorch", "deploy"),
    "quantize": (
        "INT8 that keeps accuracy: quantization-aware distillation on unlabeled photos -> .onnx (QDQ) or .pte",
        "deploy",
    ),
    "bench": ("latency and throughput on this machine: PyTorch, ONNX Runtime, OpenVINO", "deploy"),
    "prepare": ("re-encode an image folder into resized JPEG shards (resumable)", "data"),
    "compare": ("train budget-matched families on your data; accuracy vs MFLOPs report", "compare"),
}


def _command_in(argv: list[str]) -> str | None:
    """The first argument that names a command (options before it belong to the main parser)."""
    return next((a for a in argv if a in COMMANDS), None)


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, except where there is none to show (None, off, a list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, argparse.SUPPRESS) or isinstance(action.default, list | tuple):
            return action.help
        return super()._get_help_string(action)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser for ``command`` (its module imported), the others as names and help only."""
    parser = argparse.ArgumentParser(
        prog="fdmobilenet", description="FD-MobileNet and its baselines: build, profile, evaluate."
    )
    parser.add_argument("--version", action="version", version=f"fdmobilenet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, module) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=DefaultsFormatter)
        if name == command:
            mod = importlib.import_module(f"{__name__}.{module}")
            getattr(mod, f"{name}_arguments")(p)
            p.set_defaults(_run=getattr(mod, f"{name}_run"))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_in(argv)).parse_args(argv)
    try:
        return args._run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"fdmobilenet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
