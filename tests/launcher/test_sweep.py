"""Sweeps: members from axes and sweep files, what they share, and a local sweep run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher import sweep
from launcher.report import seed_groups
from launcher.status import sweep_status
from launcher.sweep_spec import MemberSpec, SweepSpec, expand, from_cli, load_spec, resolve, split_cli
from lit import stages
from lit.config import save_config
from lit.configlib import ConfigError
from tests.conftest import tiny_config


def test_commas_are_axes_and_yaml_lists_are_values() -> None:
    fixed, grid = split_cli(["train.warmup_steps=500,1000,2000", "eval.templates=[paper,openai]", "train.lr=2e-4"])
    assert fixed == ["eval.templates=[paper,openai]", "train.lr=2e-4"] and grid == {"train.warmup_steps": ["500", "1000", "2000"]}
    with pytest.raises(ConfigError, match="empty value"):
        split_cli(["train.seed=1,,2"])
    with pytest.raises(ConfigError, match="no axis to sweep"):
        from_cli("job.yaml", ["train.lr=1e-3"])


def test_members_are_named_and_crossed_with_the_grid() -> None:
    spec = SweepSpec(job="j.yaml", members=(MemberSpec("short", ("train.warmup_steps=5",)), MemberSpec("long", ("train.warmup_steps=50",))),
                     grid={"train.seed": [0, 1]})
    assert expand(spec, "s.yaml") == [
        ("short_seed-0", ("train.warmup_steps=5", "train.seed=0")), ("short_seed-1", ("train.warmup_steps=5", "train.seed=1")),
        ("long_seed-0", ("train.warmup_steps=50", "train.seed=0")), ("long_seed-1", ("train.warmup_steps=50", "train.seed=1"))]
    with pytest.raises(ConfigError, match="member names repeat: a"):
        expand(SweepSpec(job="j.yaml", members=(MemberSpec("a"), MemberSpec("a"))), "s.yaml")
    with pytest.raises(ConfigError, match="not a folder name"):
        expand(SweepSpec(job="j.yaml", members=(MemberSpec("a/b"),)), "s.yaml")


def write_job(tmp_path: Path, engine_data: dict, *extra: str) -> Path:
    cfg = tiny_config(tmp_path / "unused", engine_data, ["cluster=local", "data.workers=0", "eval.final=true", *extra])
    save_config(cfg, tmp_path / "job.yaml")
    return tmp_path / "job.yaml"


def test_a_sweep_file_resolves_every_member_and_names_bad_ones(engine_data: dict, tmp_path: Path) -> None:
    write_job(tmp_path, engine_data)
    (tmp_path / "s.yaml").write_text("job: job.yaml\nsweep_dir: sw\nmembers:\n  - {name: a, overrides: [train.lr=1e-3]}\n"
                                     "  - {name: b, overrides: [train.lr=2e-3]}\n")
    spec, _ = load_spec(tmp_path / "s.yaml", ["train.seed=0,1"])
    assert spec.name == "s" and Path(spec.job) == tmp_path / "job.yaml"
    sweep_dir, members = resolve(spec, "s.yaml")
    assert [m.name for m in members] == ["a_seed-0", "a_seed-1", "b_seed-0", "b_seed-1"]
    assert [m.cfg.train.lr for m in members] == [1e-3, 1e-3, 2e-3, 2e-3] and [m.cfg.train.seed for m in members] == [0, 1, 0, 1]
    assert {m.cfg.run_dir for m in members} == {str(sweep_dir / m.name) for m in members}
    (tmp_path / "bad.yaml").write_text("job: job.yaml\nmembers:\n  - {name: a, overrides: [train.lrr=1]}\n")
    with pytest.raises(ConfigError, match="members.a.*train.lrr"):
        resolve(load_spec(tmp_path / "bad.yaml")[0], "bad.yaml")
    (tmp_path / "typo.yaml").write_text("job: job.yaml\nmember: []\n")
    with pytest.raises(ConfigError, match="member"):
        load_spec(tmp_path / "typo.yaml")


def test_members_with_different_towers_may_not_share_a_cache(engine_data: dict, tmp_path: Path) -> None:
    job = write_job(tmp_path, engine_data, "data.image_source=cached", "data.augment=false", "pipeline.stages=[shards,embed,train]")
    same = from_cli(job, ["model.image_weights=a.pt,b.pt"], sweep_dir=str(tmp_path / "sw"))
    with pytest.raises(ConfigError, match="give each member its own data.train_embeddings"):
        sweep.prep_groups(resolve(same, "cli")[1])
    own = from_cli(job, ["data.train_embeddings=e1,e2"], sweep_dir=str(tmp_path / "sw2"))
    groups = sweep.prep_groups(resolve(own, "cli")[1])
    assert len(groups["shards"]) == 1 and len(groups["embed"]) == 2  # one shards job for both, one cache each
    res = from_cli(job, ["slurm.mem_gb=4,8"], sweep_dir=str(tmp_path / "sw3"))
    with pytest.raises(ConfigError, match="slurm.mem_gb"):
        sweep.check_shared(resolve(res, "cli")[1])


def test_members_with_the_same_prior_settings_share_one_prior_job(engine_data: dict, tmp_path: Path) -> None:
    job = write_job(tmp_path, engine_data, "cluster=slurm", "pipeline.stages=[prior,train]", "prior.epochs=2", "prior.width=32",
                    "prior.depth=1", "prior.batch_size=64")
    same = from_cli(job, ["train.seed=0,1"], sweep_dir=str(tmp_path / "same"))
    members = resolve(same, "cli")[1]
    assert members[0].cfg.prior.out == members[1].cfg.prior.out and members[0].cfg.prior.out.startswith(str(tmp_path / "same" / "priors"))
    assert sweep.prior_key(members[0].cfg) == sweep.prior_key(members[1].cfg)
    assert [g for g, _ in sweep.prep_groups(members)["prior"]] == ["prior0"]
    text = sweep.dry_run_text(same, "cli")
    assert text.count("## shared stage prior") == 1 and "## shared stage prior (prior0): " in text
    assert "#SBATCH --dependency='afterok:<job id of prior prior0>'" in text  # the members' final evaluation reads it
    seeds = from_cli(job, ["prior.seed=0,1"], sweep_dir=str(tmp_path / "seeds"))
    members = resolve(seeds, "cli")[1]
    assert members[0].cfg.prior.out != members[1].cfg.prior.out
    assert [g for g, _ in sweep.prep_groups(members)["prior"]] == ["prior0", "prior1"]
    assert sweep.dry_run_text(seeds, "cli").count("## shared stage prior") == 2
    mine = from_cli(job, ["prior.seed=0,1", f"prior.out={tmp_path / 'mine'}"], sweep_dir=str(tmp_path / "mine-sw"))
    with pytest.raises(ConfigError, match="give each member its own prior.out"):  # one folder, two priors
        sweep.prep_groups(resolve(mine, "cli")[1])
    local = from_cli(write_job(tmp_path, engine_data, "pipeline.stages=[prior,train]", "prior.epochs=2", "prior.width=32",
                               "prior.depth=1", "prior.batch_size=64"), ["train.seed=0,1"], sweep_dir=str(tmp_path / "local"))
    members = resolve(local, "cli")[1]
    sweep.run_prep_here(members)  # a local sweep makes it once, where both members look for it
    assert [p.parent.name for p in (tmp_path / "local" / "priors").glob("*/prior.pt")] == [Path(members[1].cfg.prior.out).name]
    assert all(stages.prior_state(m.cfg).complete for m in members)


def test_seeds_are_summed_up_as_mean_and_spread() -> None:
    rows = [{"member": f"m{i}", "overrides": ["train.warmup_steps=5", f"train.seed={i}"], "outcome": "finished",
             "final_top1": v, "final_top5": 90.0} for i, v in enumerate((40.0, 44.0))]
    rows.append({"member": "d", "overrides": ["train.warmup_steps=5", "train.seed=2"], "outcome": "diverged", "final_top1": None,
                 "final_top5": None})
    (group,) = seed_groups(rows)
    assert group["final_top1"] == 42.0 and group["final_top1_std"] == pytest.approx(2.83, abs=0.01) and group["diverged"] == 1


@pytest.mark.slow  # two local runs of the tiny model: about 40 s
def test_a_local_sweep_runs_each_member_reports_and_keeps_results(engine_data: dict, tmp_path: Path) -> None:
    from launcher.__main__ import main

    job = write_job(tmp_path, engine_data)
    assert main(["sweep", str(job), "train.lr=1e-3,1000000.0", "--sweep-dir", str(tmp_path / "sw"), "--paper", "warmup"]) == 0
    sweep_dir = tmp_path / "sw"
    rows = {r["member"]: r for r in sweep_status(sweep_dir)["members"]}
    assert {n: r["outcome"] for n, r in rows.items()} == {"lr-1e-3": "finished", "lr-1000000.0": "diverged"}
    report = json.loads((sweep_dir / "report.json").read_text())  # written when the last member ended
    members = {m["member"]: m for m in report["members"]}
    results = json.loads((sweep_dir / "lr-1e-3" / "results.json").read_text())
    assert members["lr-1e-3"]["final_top1"] == results["top1"] and members["lr-1000000.0"]["diverged_step"] >= 1
    assert "diverged at step" in (sweep_dir / "report.md").read_text()
    with pytest.raises(ConfigError, match="every member has its result"):
        sweep.resume(sweep_dir)
    assert sweep.cancel(sweep_dir) == []
    with pytest.raises(ConfigError, match="holds a sweep already"):
        sweep.submit(from_cli(job, ["train.lr=1e-3,2e-3"], sweep_dir=str(sweep_dir)), "cli")


def test_the_report_puts_probe_baselines_and_the_paper_beside_the_members(tmp_path: Path) -> None:
    from launcher.report import write_report
    from lit.config import load_config
    from lit.io import write_json

    sweep_dir = tmp_path / "sw"
    members = []
    for name, warmup, top1, diverged in (("w500", 500, None, True), ("w1000", 1000, 41.0, False), ("w2000", 2000, 39.5, False)):
        run_dir = sweep_dir / name
        save_config(load_config(None, [f"run_dir={run_dir}", f"train.warmup_steps={warmup}", "cluster=slurm", "slurm.gpus_per_node=2"]),
                    run_dir / "config.yaml")
        lines = [{"type": "start", "step": 0, "time": 100.0, "world_size": 2, "steps_per_epoch": 10, "total_steps": 20},
                 {"type": "train", "step": 10, "time": 150.0, "epoch": 0, "loss": 2.0, "lr": 1e-4}]
        if diverged:
            lines.append({"type": "diverged", "step": 12, "time": 160.0, "reason": "loss is nan at step 12"})
        else:
            lines += [{"type": "eval", "step": 10, "time": 155.0, "final": False, "top1": top1 + 1, "top5": 80.0},
                      {"type": "eval", "step": 20, "time": 280.0, "final": True, "top1": top1, "top5": 81.0},
                      {"type": "done", "step": 20, "time": 280.0 + 3420.0}]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        members.append({"name": name, "overrides": [f"train.warmup_steps={warmup}"], "run_dir": str(run_dir)})
    write_json(sweep_dir / "sweep.json", {"name": "sw", "job": "job.yaml", "overrides": [], "paper": "warmup", "members": members})
    write_json(sweep_dir / "probe/results.json", {"top1": 55.5, "top5": 90.0})
    write_json(sweep_dir / "baselines/clip-vitl14/results.json", {"top1": 30.25, "top5": 60.0})
    text = write_report(sweep_dir).read_text()
    data = json.loads((sweep_dir / "report.json").read_text())
    rows = {m["member"]: m for m in data["members"]}
    assert rows["w500"]["outcome"] == "diverged" and rows["w500"]["diverged_step"] == 12 and rows["w500"]["final_top1"] is None
    assert rows["w1000"]["final_top1"] == 41.0 and rows["w1000"]["best_top1"] == 42.0 and rows["w1000"]["best_epoch"] == 1
    assert rows["w1000"]["wall_s"] == 3600.0 and rows["w1000"]["gpu_hours"] == 2.0  # one hour on 2 ranks with a GPU each
    assert "| w500 | `train.warmup_steps=500` | diverged at step 12 |" in text and " diverged |" in text
    assert "63.28 / 87.48" in text and "61.96 / 86.71" in text
    assert "| linear probe on the frozen features (supervised ceiling) | 55.50 | 90.00 |" in text
    assert "| clip-vitl14 (whole pretrained model, zero-shot) | 30.25 | 60.00 |" in text
    assert all((sweep_dir / "plots" / f"{p}.png").stat().st_size > 1000 for p in ("loss", "lr", "top1"))
