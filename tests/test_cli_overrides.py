"""`section.key=value` overrides before, between or after options, in every command of `lit` and `python -m launcher`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from launcher.__main__ import PLUGINS
from launcher.__main__ import main as launcher_main
from lit.cli import COMMANDS as LIT_COMMANDS
from lit.cli import main as lit_main

REPO = Path(__file__).resolve().parents[1]
JOB = str(REPO / "jobs" / "demo.yaml")
SWEEP = str(REPO / "jobs" / "sweeps" / "ablation-warmup.yaml")
UNKNOWN = "train.bogus_key=1"

MAINS: dict[str, Callable[[Sequence[str]], int]] = {"lit": lit_main, "launcher": launcher_main}


# ---------------------------------------------------------------- real runs


def test_submit_dry_run_takes_overrides_around_its_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    code = launcher_main(["submit", str(REPO / "jobs" / "slurm-cpu-toy.yaml"), f"run_dir={run_dir}", "--dry-run",
                          "slurm.time_min=7", "--stages", "train", "slurm.partition=low"])
    text = capsys.readouterr().out
    assert (code == 0) == ("preflight passed" in text) and (code != 0) == ("submit would stop here" in text)
    assert "#SBATCH --time=7" in text and "#SBATCH --partition=low" in text and f"{run_dir}/slurm/" in text
    assert not run_dir.exists()


def test_sweep_dry_run_takes_axes_after_its_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep_dir = tmp_path / "sweep"
    code = launcher_main(["sweep", JOB, "--dry-run", "train.seed=1,2", "--sweep-dir", str(sweep_dir), "train.epochs=1"])
    text = capsys.readouterr().out
    assert (code == 0) == ("preflight passed" in text)  # the demo's data may or may not be made on this machine
    assert f"2 members in {sweep_dir}" in text
    assert re.search(r"seed-1: .*train\.seed=1", text) and re.search(r"seed-2: .*train\.seed=2", text)
    assert not sweep_dir.exists()


def test_doctor_checks_the_overridden_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nowhere = tmp_path / "nowhere"
    assert lit_main(["doctor", "--json", f"data.root={nowhere}", "--config", JOB]) == 1  # the data is missing
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["data.root"]["status"] == "fail" and str(nowhere) in checks["data.root"]["detail"]


def test_embed_takes_overrides_after_its_options(tmp_path: Path) -> None:
    from lit.config import CaptionConfig, ShardConfig
    from lit.data.shards import build_shards
    from lit.data.toy import write_toy_inat

    root = write_toy_inat(tmp_path / "toy", seed=0, train_per_class=1, val_per_class=1, test_per_class=0, image_size=32)
    build_shards(root, "val", tmp_path / "shards", ShardConfig(samples_per_shard=64, workers=1, shuffle=False),
                 CaptionConfig(), progress=False)
    out = tmp_path / "embeddings"
    assert lit_main(["embed", str(tmp_path / "shards"), str(out), "--views", "2", "model.name=lit-tiny",
                     "--device", "cpu", "model.image_weights=", "--dtype", "float32", "data.workers=0"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["model"], manifest["views"], manifest["dtype"], manifest["total_samples"]) == ("lit-tiny", 2, "float32", 32)
    from lit.config import ModelConfig
    from lit.model import build_model, fingerprint

    tiny = build_model(ModelConfig(name="lit-tiny", image_weights=""))
    assert manifest["fingerprint"] == fingerprint(tiny.model, tiny.preprocess_val)  # the overridden tower, not the default


# ---------------------------------------------------------------- commands that would do heavy work

HEAVY = [  # (main, argv, the source the error names): an unknown key after an option, other positionals before it
    ("lit", ["probe", JOB, "--epochs", "1", UNKNOWN], JOB),
    ("lit", ["train", JOB, UNKNOWN], JOB),  # no options but --help: the overrides follow the job
    ("lit", ["doctor", "--config", JOB, "train.epochs=1", "--json", UNKNOWN], JOB),
    ("lit", ["embed", "SHARDS", "OUT", "--views", "2", UNKNOWN], "defaults"),
    ("lit", ["models", "prepare", JOB, "--force", UNKNOWN], JOB),
    ("lit", ["models", "verify", SWEEP, "--member", "warmup1", UNKNOWN], "demo.yaml"),
    ("launcher", ["submit", JOB, "--stages", "train", UNKNOWN, "--dry-run"], JOB),
    ("launcher", ["sweep", JOB, "--dry-run", "train.seed=1,2", UNKNOWN], JOB),
    ("launcher", ["demo", "name=x", "--no-preempt", UNKNOWN], "defaults"),
    ("launcher", ["ablation", "train.epochs=1", "--sweep-file", SWEEP, UNKNOWN], SWEEP),
]


@pytest.mark.parametrize(("main", "argv", "source"), HEAVY, ids=[" ".join(a[:2]) if a[0] == "models" else a[0] for _, a, _ in HEAVY])
def test_an_unknown_key_after_an_option_reaches_the_config_loader(
        main: str, argv: list[str], source: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert MAINS[main](argv) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" not in err
    assert "config error:" in err and "train.bogus_key: unknown key" in err and source in err


def test_a_misplaced_argument_is_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        lit_main(["probe", JOB, "--epochs", "1", "--no-such-option", "train.epochs=1"])
    assert exited.value.code == 2 and "unrecognized arguments: --no-such-option" in capsys.readouterr().err


# ---------------------------------------------------------------- help


def test_launcher_help_lists_every_command_on_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exited:
        launcher_main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    block = text.split("  COMMAND\n", 1)[1].split("\n\n")[0].splitlines()
    listed = [line.split()[0] for line in block]
    assert listed == ["submit", "status", "resume", "cancel", "logs", "demo", "sweep", "ablation", "report"]
    assert all(re.fullmatch(r" {4}\S+ +\S.*", line) for line in block)  # one line each, none wrapped
    for name, (_, help_text) in PLUGINS.items():
        assert any(line.split(maxsplit=1) == [name, help_text] for line in block)


@pytest.mark.parametrize("command", list(LIT_COMMANDS))
def test_every_lit_command_parses_intermixed(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        lit_main([command, "--help"])
    assert exited.value.code == 0 and f"lit {command}" in capsys.readouterr().out
