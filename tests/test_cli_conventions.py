"""Both command lines follow one set of conventions (lit.cliargs): walked parser by parser.

- every command answers `--help`;
- where a command takes `section.key=value` overrides, they follow the job file (`JOB.yaml`), or the
  run folder for `resume`;
- a flag name means one thing everywhere: `--top` is a number of guesses, `--subset` restricts the
  classes, `--no-progress` turns off progress bars, `--dry-run` submits nothing;
- names retired for that (`--config`, `--checkpoint`, `--model`, `--quiet`, ...) are still read
  but no longer shown.
"""

from __future__ import annotations

import argparse
import importlib

import pytest

from launcher import __main__ as launcher_cli
from lit import cli as lit_cli

MEANINGS = {"--top": "guesses", "--subset": "classes", "--no-progress": "progress", "--dry-run": "submit",
            "--max-samples": "samples", "--rows": "rows", "--no-tables": "tables"}
"""Flags used by several commands and the word their help must hold: one meaning each."""
RETIRED = ("--config", "--checkpoint", "--model", "--quiet", "--views", "--batch-size-embed")


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, by its name on the command line (`lit X`, `launcher X`, `lit models prepare`)."""
    out: dict[str, argparse.ArgumentParser] = {}
    for name, (module_name, help_text) in lit_cli.COMMANDS.items():
        parser = argparse.ArgumentParser(prog=f"lit {name}", description=help_text)
        importlib.import_module(module_name).add_arguments(parser)
        out[f"lit {name}"] = parser
    main = launcher_cli.build_parser()
    for action in main._actions:  # argparse keeps subcommands only there
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name not in launcher_cli.PLUGINS:
                    out[f"launcher {name}"] = sub
    for name, (module_name, help_text) in launcher_cli.PLUGINS.items():
        parser = argparse.ArgumentParser(prog=f"launcher {name}", description=help_text)
        importlib.import_module(module_name).add_arguments(parser)
        out[f"launcher {name}"] = parser
    for name, parser in list(out.items()):  # subcommands of a command (lit models prepare|verify)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                out.update({f"{name} {sub}": p for sub, p in action.choices.items()})
    return out


PARSERS = parsers()


def visible_options(parser: argparse.ArgumentParser) -> dict[str, str]:
    return {flag: action.help or "" for action in parser._actions if action.help != argparse.SUPPRESS
            for flag in action.option_strings}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_command_answers_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        PARSERS[name].parse_args(["--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage:")


def test_overrides_follow_the_job_file() -> None:
    readers = []
    for name, parser in PARSERS.items():
        positionals = [a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
        names = [a.dest for a in positionals]
        if "overrides" not in names:
            continue
        readers.append(name)
        if names.index("overrides") == 0:
            assert name in ("launcher demo", "launcher ablation"), f"{name}: overrides without a job file"  # their own jobs
            continue
        before = positionals[names.index("overrides") - 1]
        allowed = {"launcher resume": ("RUN_DIR",), "lit eval": ("RUN | JOB.yaml",)}.get(name, ("JOB.yaml", "JOB_OR_SWEEP.yaml"))
        assert before.metavar in allowed, f"{name}: overrides follow {before.metavar or before.dest}, not the job file"
    assert {"lit train", "lit doctor", "lit embed", "lit shards", "lit probe", "lit models prepare", "launcher submit",
            "launcher sweep", "launcher resume", "lit eval"} <= set(readers)


def test_one_meaning_per_flag_and_retired_names_hidden() -> None:
    seen: dict[str, list[str]] = {}
    for name, parser in PARSERS.items():
        for flag, help_text in visible_options(parser).items():
            seen.setdefault(flag, []).append(name)
            assert flag not in RETIRED, f"{name} still shows the retired {flag}"
            if flag in MEANINGS:
                assert MEANINGS[flag] in help_text, f"{name} {flag}: {help_text!r} does not mean {MEANINGS[flag]!r}"
    assert len(seen["--top"]) >= 2 and len(seen["--no-progress"]) >= 4 and len(seen["--subset"]) >= 2


@pytest.mark.parametrize(("argv", "dest", "value"), [
    (["calibrate", "RUN", "--quiet"], "no_progress", True),
    (["eval", "--checkpoint", "RUN"], "checkpoint_flag", "RUN"),
    (["eval", "RUN", "--subset", "64"], "max_samples", 64),
    (["captions", "--top", "3"], "rows", 3),
    (["predict", "--model", "EXPORT", "a.jpg"], "model", "EXPORT"),
    (["doctor", "--config", "JOB.yaml"], "config_flag", "JOB.yaml"),
])
def test_retired_names_are_still_read_with_a_warning(argv: list[str], dest: str, value: object,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    args = lit_cli.parse_intermixed(PARSERS[f"lit {argv[0]}"], argv[1:])
    assert getattr(args, dest) == value
    assert any("is renamed" in r.getMessage() for r in caplog.records)
