"""Errors that name the caller's *parameters*, so each front end can say them its own way.

The library speaks Python: ``export_weights(int8=True)`` without ``calibration`` is told about
``calibration``, not about a command-line flag. A message marks each parameter it mentions as
```name``` (a backticked identifier); ``str(error)`` keeps the marks, and the command line renders
them as its flags (``cli.flag_of``), so ``fdmobilenet export`` still says ``--calibration``. Nothing
here imports from the rest of the package.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_PARAM = re.compile(r"`([a-z][a-z0-9_]*)`")


def spell_params(text: str, spell: Callable[[str], str]) -> str:
    """``text`` with every ```name``` replaced by ``spell(name)`` (the CLI: the flag that sets it)."""
    return _PARAM.sub(lambda m: spell(m[1]), text)


class NamesParameters(Exception):
    """Mixin: the message names parameters as ```name```; ``render`` spells them another way."""

    def render(self, spell: Callable[[str], str]) -> str:
        """The message with every ```name``` replaced by ``spell(name)`` (the CLI: the flag)."""
        return spell_params(str(self), spell)

    @property
    def params(self) -> list[str]:
        """Every parameter the message names, in order."""
        return _PARAM.findall(str(self))


class ParameterError(NamesParameters, ValueError):
    """A value given for ``param`` (a parameter or config field name) cannot be used."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


class ParameterPathError(NamesParameters, FileNotFoundError):
    """The file or folder given for ``param`` does not exist."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


class StoppedError(NamesParameters, RuntimeError):
    """A run ended early; ``exit_code`` is what a process running it exits with (3 diverged, 128 + signal)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
