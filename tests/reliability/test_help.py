"""`--help` and `-h` of every command and subcommand (the top level included) print help and exit 0: the
parser tree of thoraxmae.cli.build_parser is walked, so a command added later is covered too (a `%` in a help
text once crashed `thoraxmae --help`)."""
from __future__ import annotations

import argparse

import pytest

from thoraxmae.cli import build_parser, main


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the parser tree, the top level (()) first."""
    out = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += commands(sub, (*prefix, name))
    return out


COMMANDS = commands(build_parser())


def test_the_walk_finds_the_commands_and_their_subcommands():
    assert () in COMMANDS and ("study",) in COMMANDS and ("study", "resume") in COMMANDS
    assert ("data", "prepare") in COMMANDS and ("ui",) in COMMANDS and ("evaluate",) in COMMANDS
    assert len(COMMANDS) > 15


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "thoraxmae")
def test_help_exits_0(command, flag, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*command, flag])
    out = capsys.readouterr()
    assert stop.value.code == 0, out.err
    assert out.out.startswith("usage: thoraxmae"), out.out[:200]
    assert not out.err
