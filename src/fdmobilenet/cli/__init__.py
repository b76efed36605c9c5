"""The ``fdmobilenet`` command: one command table, each command's module imported only when it runs.

``fdmobilenet --help`` therefore imports neither torch nor any command module. Argument parsing
lives here and in the ``cli/<group>.py`` modules only; each calls one library function.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from .. import __version__
from .._errors import NamesParameters, StoppedError, spell_params

# name -> (help, module cli/MODULE.py defining NAME_arguments(parser) and NAME_run(args) -> exit code)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("list the registered models with MACs and parameters at 224 px", "models"),
    "profile": ("MACs, parameters and peak activation memory (optionally per layer)", "models"),
    "convert": ("convert the authors' weights to safetensors with metadata", "models"),
    "eval": ("top-1/top-5 of weights on an image folder", "evaluate"),
    "predict": ("top-k classes of image files", "evaluate"),
    "train": ("train or fine-tune a model on an image folder", "train"),
    "export": (
        "export to ONNX (fp32 / INT8 QDQ), TorchScript, pt2 or .pte, checked against PyTorch (detectors: .onnx with "
        "NMS in the graph or not, .pte)",
        "deploy",
    ),
    "quantize": (
        "INT8 that keeps accuracy (equalized, bias-corrected; fidelity vs fp32 reported) -> .onnx (QDQ) or .pte",
        "deploy",
    ),
    "bench": ("latency and throughput on this machine: PyTorch, ONNX Runtime, OpenVINO", "deploy"),
    "prepare": ("re-encode an image folder into resized JPEG shards (resumable)", "data"),
    "compare": ("train budget-matched families on your data; accuracy vs MFLOPs report", "compare"),
    "fit": (
        "which family, width and resolution fit a device's SRAM and flash (INT8), ranked by MACs; with --data, the "
        "leading ones trained and the winner quantized",
        "fit",
    ),
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
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error (also: FDM_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, module) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=DefaultsFormatter)
        if name == command:
            mod = importlib.import_module(f"{__name__}.{module}")
            getattr(mod, f"{name}_arguments")(p)
            p.set_defaults(_run=getattr(mod, f"{name}_run"))
    return parser


EXIT_BAD_INPUT = 2  # a file or flag that cannot be used: the message says which and what to do
EXIT_ENVIRONMENT = 1  # the disk (full, read-only, no permission) or the machine refused; nothing was lost
EXIT_BROKEN_PIPE = 128 + 13  # stdout closed early (`fdmobilenet models | head`), as a shell reports SIGPIPE
_BAD_PATH = (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)


# The one map from library parameter names to flags: ``--`` + the name with ``_`` as ``-`` unless listed here
# (``dst``: convert's positional argument, spelled as its usage line shows it).
FLAG_OF_PARAM = {"output": "-o", "fmt": "--format", "model_name": "--model", "extra_rows": "--extra-row", "dst": "dst"}


def flag_of(param: str) -> str:
    """The command-line flag that sets library parameter ``param`` (``calibration_size`` -> ``--calibration-size``)."""
    return FLAG_OF_PARAM.get(param, "--" + param.replace("_", "-"))


def in_flags(text: str) -> str:
    """Library text (a report, an error) with the parameters it names spelled as this command line's flags."""
    return spell_params(text, flag_of)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Errors are one line, ``fdmobilenet CMD: error: ...``, with exit code 2 for bad
    input and 1 for a disk or machine that refused; ``--debug`` or ``FDM_DEBUG=1`` re-raise instead."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_in(argv)).parse_args(argv)
    debug = args.debug or os.environ.get("FDM_DEBUG", "") not in ("", "0")
    try:
        code = args._run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # Python's recipe: nothing more to flush at exit
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return 130
    except StoppedError as e:  # a run ended early with its own exit code (3 diverged, 128 + signal stopped)
        if debug:
            raise
        print(f"fdmobilenet {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except (ValueError, OSError, MemoryError, RuntimeError) as e:
        if debug or (isinstance(e, RuntimeError) and not _out_of_memory(e)):
            raise
        print(f"fdmobilenet {args.command}: error: {_one_line(e)}", file=sys.stderr)
        bad_input = isinstance(e, (ValueError, *_BAD_PATH))
        return EXIT_BAD_INPUT if bad_input else EXIT_ENVIRONMENT


def _out_of_memory(e: BaseException) -> bool:
    """torch's allocation failures are RuntimeErrors (CUDA's: OutOfMemoryError); other RuntimeErrors are bugs."""
    return type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(e)


def _one_line(e: BaseException) -> str:
    """The error line; an OSError names its file and says what to do about the disk."""
    if isinstance(e, OSError) and e.filename is not None:
        hint = {
            errno.ENOSPC: "free some space or write elsewhere",
            errno.EDQUOT: "free some space or write elsewhere",
            errno.EROFS: "the file system is read-only: write elsewhere",
            errno.EACCES: "no permission: write elsewhere or change the permissions",
            errno.EPERM: "no permission: write elsewhere or change the permissions",
        }.get(e.errno or 0, "check the path")
        return f"{e.filename}: {e.strerror or e}; {hint}"
    if isinstance(e, MemoryError) or _out_of_memory(e):
        said = " ".join(str(e).split())[:200]
        return f"out of memory ({said}); use smaller settings (--batch-size, --resolution, --workers)"
    if isinstance(e, NamesParameters):
        return e.render(flag_of)
    return str(e)  # a ValueError's first line is the error; indented lines below it list the details
