"""`eqgen --help` of every command: defaults shown, preset choices listed; `eqgen --version`."""
import argparse

import pytest

import eqgen
from eqgen.cli import build_parser, main
from eqgen.generator import GENERATOR_PRESETS
from eqgen.tokenizer import TOKENIZER_PRESETS


def _commands(parser: argparse.ArgumentParser, path=()):
    """(command words, parser) of every command and subcommand."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, path + (name,))


def test_every_flag_with_a_default_states_it_in_its_help_line():
    commands = list(_commands(build_parser()))
    assert len(commands) > 15
    checked = 0
    for path, parser in commands:
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                line = " ".join(parser._get_formatter()._format_action(action).split())
                written = "default" in (action.help or "")  # the help states it in its own words
                assert ("default" in line) if written else (f"default: {action.default}" in line), (path, line)
                checked += 1
    assert checked > 50


def test_preset_choices_come_from_the_preset_dicts(capsys):
    helps = {path: parser.format_help() for path, parser in _commands(build_parser())}
    assert "{" + ",".join(TOKENIZER_PRESETS) + "}" in helps[("train", "tokenizer")]
    assert "{" + ",".join(GENERATOR_PRESETS) + "}" in helps[("train", "generator")]
    assert main(["train", "generator", "--preset", "XL", "--tokenizer", "t", "--out", "o"]) == 2
    assert "invalid choice: 'XL'" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"eqgen {eqgen.__version__}"
