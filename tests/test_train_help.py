"""``train --help`` in argument groups generated from ``TrainConfig``'s ``SECTIONS`` (issue 19)."""

from __future__ import annotations

import re
from collections import Counter

from fdmobilenet.train.config import FIELDS, SECTIONS
from helpers import run_cli


def test_every_field_is_in_exactly_one_section() -> None:
    counts = Counter(name for names in SECTIONS.values() for name in names)
    assert set(counts) == set(FIELDS), set(counts) ^ set(FIELDS)
    assert [n for n, c in counts.items() if c > 1] == []


def test_help_groups_every_flag_under_its_section(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: each help text whole
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    headings = [m.start() for m in re.finditer(r"^\S[^\n]*:$", out, re.M)]  # "options:", "data:", ...
    groups = {out[a : out.index("\n", a)].rstrip(":"): out[a:b] for a, b in zip(headings, [*headings[1:], len(out)])}
    assert list(groups)[-len(SECTIONS) :] == list(SECTIONS)
    for title, names in SECTIONS.items():
        # one entry per option: its "  --flag METAVAR" (or "--x, --no-x") line and the help beside or below
        entries = {e.split()[0].rstrip(","): " ".join(e.split()) for e in re.split(r"\n(?=  -)", groups[title])[1:]}
        assert list(entries) == ["--" + n.replace("_", "-") for n in names], title
        for name in names:
            f, entry = FIELDS[name], entries["--" + name.replace("_", "-")]
            assert " ".join(f.metadata["help"].split()) in entry, name
            assert (f.default is None) != ("[default: " in entry), name
    assert "--recipe" in groups["options"] and "--resume" in groups["options"]
