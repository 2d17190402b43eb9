"""Job spec → submitit: the job files, validation that names the key, the container command, --dry-run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from launcher import clusters, preflight, spec
from launcher.__main__ import main
from lit.config import load_config, with_overrides
from lit.configlib import ConfigError
from tests.conftest import REPO

JOBS = REPO / "jobs"
PAPER = [JOBS / f"inat21-vitl14-warmup{w}.yaml" for w in (500, 1000, 2000)]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- the job files


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_jobs(path: Path) -> None:
    cfg = load_config(path)
    s = cfg.slurm
    assert cfg.cluster == "slurm" and (s.nodes, s.gpus_per_node, s.ntasks_per_node) == (2, 8, 8)
    assert cfg.train.precision == "amp_fp16" and cfg.train.epochs == 18 and cfg.train.device == "cuda"
    assert cfg.model.lock_image and cfg.model.config["vision_cfg"]["patch_size"] == 14
    assert cfg.model.config["vision_cfg"]["width"] == 1024 and cfg.model.config["vision_cfg"]["layers"] == 24
    assert cfg.model.config["text_cfg"]["hf_model_name"].endswith("all-MiniLM-L12-v2")
    assert not cfg.model.config["text_cfg"]["hf_model_name"].startswith(("hf-hub:", "sentence-transformers/"))
    assert cfg.data.batch_size * spec.world_size(cfg) == 4096
    assert cfg.container.image.endswith(".sif") and cfg.container.nv
    assert str(cfg.train.warmup_steps) in path.stem and str(cfg.train.warmup_steps) in cfg.name
    text = path.read_text()
    assert "batch" in text.lower() and "learning rate" in text.lower()  # the choice is explained


def test_paper_jobs_differ_only_in_warmup() -> None:
    configs = [load_config(p) for p in PAPER]
    base = with_overrides(configs[1], ["train.warmup_steps=500", f"name={configs[0].name}", f"run_dir={configs[0].run_dir}"])
    assert base == configs[0]


def test_demo_job_is_the_embedded_default_with_two_local_processes() -> None:
    demo = load_config(JOBS / "demo.yaml")
    assert demo == with_overrides(load_config(None), ["slurm.tasks_per_node=2"])
    assert demo.cluster == "local" and spec.world_size(demo) == 2


def test_small_slurm_cpu_job() -> None:
    cfg = load_config(JOBS / "slurm-cpu-toy.yaml")
    assert cfg.cluster == "slurm" and cfg.slurm.gpus_per_node == 0 and spec.world_size(cfg) == 2
    assert not spec.uses_gpus(cfg) and clusters.of(cfg).rendezvous_notes(cfg)["backend"] == "gloo"


def test_one_task_per_gpu_by_default() -> None:
    cfg = load_config(None, ["slurm.gpus_per_node=8"])
    assert cfg.slurm.tasks_per_node == 0 and cfg.slurm.ntasks_per_node == 8
    assert load_config(None).slurm.ntasks_per_node == 1


# ---------------------------------------------------------------- mistakes fail naming the key


@pytest.mark.parametrize("text, key", [
    ("slurm:\n  gpus: 8\n", "slurm.gpus"),
    ("slurm:\n  nodes: 0\n", "slurm.nodes"),
    ("slurm:\n  gpus_per_node: 8\n  tasks_per_node: 4\n", "slurm.gpus_per_node"),
    ("slurm:\n  gpus_per_node: 4\n  tasks_per_node: 8\n", "slurm.tasks_per_node"),
    ("slurm:\n  time_min: 1\n  signal_delay_s: 90\n", "slurm.signal_delay_s"),
    ("slurm:\n  extra: {nodes: 3}\n", "slurm.extra.nodes"),
    ("cluster: cloud\n", "cluster"),
    ("container:\n  nv: maybe\n", "container.nv"),
    ("container:\n  binds: ['/data,/scratch']\n", "container.binds[0]"),
])
def test_spec_mistakes_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert err.value.key == key, err.value


@pytest.mark.parametrize("text", ["slurm:\n  nodes: 0\n", "container:\n  image: /nowhere/lit.sif\n"])
def test_submit_stops_before_submitting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str], text: str) -> None:
    def no_executor(*args: object, **kwargs: object) -> None:
        raise AssertionError("an executor was created")

    for kind in clusters.KINDS.values():
        monkeypatch.setattr(kind, "executor", no_executor)
    run_dir = tmp_path / "run"
    job = write(tmp_path, f"cluster: slurm\nrun_dir: {run_dir}\n{text}")
    assert main(["submit", str(job)]) == 2
    err = capsys.readouterr().err
    assert ("slurm.nodes" if "nodes" in text else "container.image") in err
    assert not run_dir.exists()


def test_missing_image_fails_in_submit(tmp_path: Path) -> None:
    from launcher.submit import submit

    cfg = load_config(None, ["cluster=slurm", f"run_dir={tmp_path / 'run'}", f"container.image={tmp_path / 'lit.sif'}"])
    with pytest.raises(ConfigError) as err:
        submit(cfg)
    assert err.value.key == "container.image" and "Singularity.def" in str(err.value)


# ---------------------------------------------------------------- the container command


def test_python_runs_inside_the_container(tmp_path: Path) -> None:
    image = tmp_path / "lit.sif"
    image.write_bytes(b"")
    run_dir = tmp_path / "runs" / "x"
    cfg = spec.prepare(load_config(None, [f"run_dir={run_dir}", f"container.image={image}",
                                          "container.binds=[/data/inat2021, /scratch/a:/a]"]))
    cmd = spec.python_command(cfg)
    assert cmd == (f"singularity exec --nv --bind /data/inat2021 --bind /scratch/a:/a --bind {run_dir} {image} "
                   "python -u -m launcher.boot")
    preflight.check_container(cfg)  # exists: no error
    covered = spec.prepare(with_overrides(cfg, [f"container.binds=[{tmp_path}]", "container.nv=false",
                                                 "container.runtime=apptainer"]))
    assert spec.python_command(covered) == f"apptainer exec --bind {tmp_path} {image} python -u -m launcher.boot"
    assert spec.task_command(covered).startswith(
        f"apptainer exec --bind {tmp_path} {image} python -u -m launcher.boot -u -m submitit.core._submit ")


def test_without_container_python_is_this_interpreter() -> None:
    import sys

    assert spec.python_command(load_config(None)) == f"{sys.executable} -u -m launcher.boot"


def test_boot_survives_an_early_usr2_and_runs_submitits_module(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "probe.py").write_text(
        "import os, signal, sys, time\n"
        "from launcher import boot\n"
        "os.kill(os.getpid(), signal.SIGUSR2)\n"
        "time.sleep(0.1)\n"
        "print(__name__, sys.argv[1:], boot.EARLY == [signal.SIGUSR2])\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    out = subprocess.run([sys.executable, "-u", "-m", "launcher.boot", "-u", "-m", "probe", "FOLDER"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["__main__", "['FOLDER']", "True"]


# ---------------------------------------------------------------- submitit parameters and --dry-run


def test_slurm_parameters() -> None:
    cfg = load_config(PAPER[1], ["slurm.account=abc", "slurm.extra={mail-type: END}"])
    p = spec.slurm_parameters(cfg)
    assert (p["nodes"], p["ntasks_per_node"], p["gpus_per_node"], p["time"], p["signal_delay_s"]) == (2, 8, 8, 1440, 300)
    assert p["srun_args"] == ["--kill-on-bad-exit=1"] and p["account"] == "abc" and p["exclusive"] is True
    assert p["additional_parameters"] == {"requeue": True, "mail-type": "END"}
    assert "partition" not in p and "qos" not in p  # empty: the cluster's default
    cpu = spec.slurm_parameters(load_config(JOBS / "slurm-cpu-toy.yaml"))
    assert "gpus_per_node" not in cpu and "exclusive" not in cpu
    local = spec.local_parameters(load_config(JOBS / "demo.yaml"))
    assert local["tasks_per_node"] == 2 and local["gpus_per_node"] == 0


def test_dry_run_of_the_paper_jobs_pipeline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", str(PAPER[1]), "--dry-run"]) == 2  # what the submission would say: no image on this machine
    text = capsys.readouterr().out
    assert "submit would stop here:" in text and "container.image" in text
    assert text.startswith("# pipeline of inat21-vitl14-warmup1000: prior, shards → embed → train → eval")
    prior, shards, embed, train, evaluate = text.split("## stage ")[1:]
    assert "#SBATCH --cpus-per-task=16" in prior and "--gpus-per-node" not in prior and "--dependency" not in prior
    assert "#SBATCH --cpus-per-task=32" in shards and "--gpus-per-node" not in shards and "#SBATCH --time=240" in shards
    assert "#SBATCH --gpus-per-node=8" in embed and "#SBATCH --nodes=2" in embed and "#SBATCH --time=120" in embed
    assert "afterok:<job id of embed>" in train and "#SBATCH --time=1440" in train
    assert "#SBATCH --nodes=1" in evaluate and "#SBATCH --gpus-per-node=8" in evaluate
    assert "afterok:<job id of prior>:<job id of train>" in evaluate


def test_dry_run_of_the_paper_jobs_training(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", str(PAPER[1]), "--dry-run", "--stages", "train"]) == 2
    text = capsys.readouterr().out
    for line in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=8",
                 "#SBATCH --signal=USR2@300", "#SBATCH --time=1440", "#SBATCH --requeue",
                 "#SBATCH --cpus-per-task=5", "#SBATCH --mem=160GB", "#SBATCH --constraint=v100",
                 "#SBATCH --job-name=inat21-vitl14-warmup1000"):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert "--kill-on-bad-exit=1" in srun
    assert ("singularity exec --nv --bind /data/inat2021 --bind /scratch/inat21 --bind /models "
            "/project/lit/images/lit.sif python -u -m launcher.boot -u -m submitit.core._submit "
            "/scratch/inat21/runs/inat21-vitl14-warmup1000/slurm") in srun
    assert "MASTER_ADDR: first host of the allocation" in text and "backend: nccl" in text
    assert "world size: 16" in text and "cuda:7" in text
    assert "submit would stop here:" in text and "container.image" in text  # the preflight's refusal, after the script


def test_dry_run_applies_overrides_and_submits_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, absent = tmp_path / "run", tmp_path / "not-made"
    # The data paths point where nothing is (a checkout that ran `make demo` has the job's own toy shards).
    code = main(["submit", str(JOBS / "slurm-cpu-toy.yaml"), f"run_dir={run_dir}", "slurm.time_min=7",
                 "slurm.partition=low", f"data.train_embeddings={absent}/train", f"data.val_embeddings={absent}/val",
                 f"data.val_shards={absent}/val", "--dry-run"])
    text = capsys.readouterr().out
    assert code != 0 and "submit would stop here:" in text  # no cached embeddings there: the preflight says so
    assert "#SBATCH --time=7" in text and "#SBATCH --partition=low" in text and "--gpus-per-node" not in text
    assert f"{run_dir}/slurm/%j_%t_log.out" in text and "backend: gloo" in text
    assert not run_dir.exists()


def test_task_layout() -> None:
    cfg = load_config(PAPER[0])
    layout = clusters.of(cfg).layout(cfg)
    assert len(layout) == 16 and layout[9].node == 1 and layout[9].local_rank == 1 and layout[9].device == "cuda:1"
    demo = load_config(JOBS / "demo.yaml")
    local = clusters.of(demo).layout(demo)
    assert [(t.rank, t.node, t.device) for t in local] == [(0, 0, "cpu"), (1, 0, "cpu")]
