"""`lit doctor`: the checks on injected device facts, the job's paths, and one real run here."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from lit import doctor
from lit.config import Config, config_from_dict
from lit.doctor import Check, DeviceQuery, Gpu, arch_support, ok, parse_capability, report, run_checks

ROOT = Path(__file__).resolve().parents[1]
V100 = Gpu(0, "Tesla V100-SXM2-32GB", (7, 0))
A100 = Gpu(0, "NVIDIA A100-SXM4-40GB", (8, 0))
CU126_ARCHS = ("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90")
CU130_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")


def fake(**kw: Any) -> DeviceQuery:
    """A healthy cu126 runtime on one V100, with `kw` replacing facts."""
    facts: dict[str, Any] = dict(
        torch_version="2.14.1+cu126", cuda_version="12.6", cuda_available=True, gpus=(V100,),
        arch_list=CU126_ARCHS, cudnn_version=91002, nccl_available=True, nccl_version="2.27.5",
        run_conv=lambda index: None,
    )
    facts.update(kw)
    if not facts["gpus"]:
        facts["cuda_available"] = False
    return DeviceQuery(**facts)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == "fail"]


# ---------------------------------------------------------------- runtime


def test_healthy_v100_is_ok() -> None:
    checks = run_checks(query=fake())
    assert ok(checks), failures(checks)
    assert by_name(checks)["GPU 0 arch"].status == "ok"
    assert by_name(checks)["GPU 0 conv"].status == "ok"


def test_v100_without_sm70_says_so_plainly() -> None:
    checks = run_checks(query=fake(torch_version="2.14.1+cu130", cuda_version="13.0", arch_list=CU130_ARCHS))
    assert not ok(checks)
    arch = by_name(checks)["GPU 0 arch"]
    assert arch.status == "fail"
    assert "no kernels for the V100 (sm_70)" in arch.detail
    assert "cu126" in arch.fix and "download.pytorch.org/whl/cu126" in arch.fix


def test_v100_with_cudnn_911_fails() -> None:
    cudnn = by_name(run_checks(query=fake(cudnn_version=91100)))["cuDNN"]
    assert cudnn.status == "fail"
    assert "9.11.0" in cudnn.detail and "sm_70" in cudnn.detail
    assert "nvidia-cudnn-cu12<9.11" in cudnn.fix and "cu126" in cudnn.fix


def test_a100_with_sm80_is_ok_and_newer_cudnn_is_fine() -> None:
    checks = run_checks(query=fake(gpus=(A100,), arch_list=("sm_80", "sm_90"), cudnn_version=92400))
    assert ok(checks), failures(checks)
    assert by_name(checks)["cuDNN"].detail == "cuDNN 9.24.0"


def test_no_gpu_is_a_warning_not_a_crash() -> None:
    checks = run_checks(query=fake(gpus=()))
    gpus = by_name(checks)["GPUs"]
    assert gpus.status == "warn" and "no CUDA GPU visible" in gpus.detail and "--nv" in gpus.fix
    assert ok(checks)


def test_no_gpu_names_the_driver_message_and_cpu_only_builds() -> None:
    q = fake(gpus=(), cuda_messages=("The NVIDIA driver on your system is too old (found version 11040).",))
    assert "driver on your system is too old" in by_name(run_checks(query=q))["GPUs"].detail
    cpu = run_checks(query=fake(gpus=(), cuda_version=None, torch_version="2.14.1+cpu", arch_list=(), cudnn_version=None))
    assert ok(cpu) and "cu126" in by_name(cpu)["GPUs"].fix


def test_target_arch_checked_without_a_gpu() -> None:
    bad = run_checks(query=fake(gpus=(), arch_list=CU130_ARCHS, cudnn_version=92400), targets=[(7, 0)])
    assert by_name(bad)["target sm_70"].status == "fail" and "V100 (sm_70)" in by_name(bad)["target sm_70"].detail
    assert by_name(bad)["cuDNN"].status == "fail"
    good = run_checks(query=fake(gpus=()), targets=[(7, 0)])
    assert ok(good) and by_name(good)["target sm_70"].status == "ok"
    cpu = run_checks(query=fake(gpus=(), cuda_version=None, arch_list=(), cudnn_version=None), targets=[(7, 0)])
    assert by_name(cpu)["target sm_70"].status == "fail"


@pytest.mark.parametrize(
    ("cap", "archs", "expected"),
    [
        ((7, 0), CU126_ARCHS, "sm_70"),
        ((8, 6), ("sm_80",), "sm_80"),  # same major, higher minor: the cubin runs
        ((7, 0), ("sm_75", "sm_80"), None),  # a higher minor never runs on a lower one
        ((9, 0), ("sm_90a",), "sm_90a"),
        ((10, 0), ("sm_90a",), None),
        ((8, 9), ("sm_70", "compute_80"), "compute_80 (PTX, compiled at first use)"),
        ((7, 0), ("compute_80",), None),
        ((12, 0), ("sm_120",), "sm_120"),
    ],
)
def test_arch_support(cap: tuple[int, int], archs: tuple[str, ...], expected: str | None) -> None:
    assert arch_support(cap, archs) == expected


def test_failed_convolution_is_reported() -> None:
    def broken(index: int) -> None:
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device\nmore")

    conv = by_name(run_checks(query=fake(run_conv=broken)))["GPU 0 conv"]
    assert conv.status == "fail" and "no kernel image" in conv.detail and "more" not in conv.detail


def test_nccl_missing_fails_only_for_multi_gpu_jobs() -> None:
    q = fake(nccl_available=False, nccl_version=None)
    assert by_name(run_checks(query=q))["NCCL"].status == "warn"
    cfg = config_from_dict({"slurm": {"nodes": 2, "gpus_per_node": 1, "tasks_per_node": 1}})
    assert by_name(doctor.runtime_checks(q, cfg))["NCCL"].status == "fail"
    assert by_name(run_checks(query=fake(gpus=(), nccl_available=False)))["NCCL"].status == "ok"


def test_bf16_on_a_v100_fails() -> None:
    cfg = config_from_dict({"train": {"precision": "amp_bf16"}})
    check = by_name(doctor.runtime_checks(fake(), cfg))["train.precision"]
    assert check.status == "fail" and "amp_fp16" in check.fix
    assert "train.precision" not in by_name(doctor.runtime_checks(fake(gpus=(A100,)), cfg))


def test_cuda_device_without_gpu_fails() -> None:
    cfg = config_from_dict({"train": {"device": "cuda"}})
    assert by_name(doctor.runtime_checks(fake(gpus=()), cfg))["GPUs"].status == "fail"


# ---------------------------------------------------------------- job paths


def make_job(tmp_path: Path, **overrides: Any) -> Config:
    """A job whose every path exists under tmp_path, with `overrides` (section -> dict) merged in."""
    for split in ("train", "val"):
        (tmp_path / "shards" / split).mkdir(parents=True)
        (tmp_path / "shards" / split / "manifest.json").write_text("{}")
        (tmp_path / "emb" / split).mkdir(parents=True)
    (tmp_path / "inat").mkdir()
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "lit.sif").write_bytes(b"")
    data: dict[str, Any] = {
        "run_dir": str(tmp_path / "runs" / "job"),
        "data": {"root": str(tmp_path / "inat"), "train_shards": str(tmp_path / "shards/train"),
                 "val_shards": str(tmp_path / "shards/val"), "train_embeddings": str(tmp_path / "emb/train"),
                 "val_embeddings": str(tmp_path / "emb/val")},
        "model": {"pretrained": str(tmp_path / "model.pt")},
        "container": {"image": str(tmp_path / "lit.sif")},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return config_from_dict(data)


def test_job_with_every_path_present_is_ok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPTAINER_CONTAINER", raising=False)
    monkeypatch.delenv("SINGULARITY_CONTAINER", raising=False)
    checks = run_checks(make_job(tmp_path), fake())
    assert ok(checks), failures(checks)
    names = set(by_name(checks))
    assert {"data.root", "data.train_shards", "data.val_shards", "run_dir", "model.pretrained",
            "model.image_weights", "container.image"} <= names


@pytest.mark.parametrize(
    ("key", "section", "change"),
    [
        ("data.root", "data", {"root": "missing-root"}),
        ("data.train_shards", "data", {"train_shards": "missing-shards"}),
        ("data.val_shards", "data", {"val_shards": "missing-shards"}),
        ("model.pretrained", "model", {"pretrained": "missing.pt"}),
        ("model.image_weights", "model", {"image_weights": "pkg:no-such-net"}),
        ("container.image", "container", {"image": "missing.sif"}),
    ],
)
def test_missing_path_fails_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, section: str, change: dict[str, str]
) -> None:
    monkeypatch.delenv("APPTAINER_CONTAINER", raising=False)
    monkeypatch.delenv("SINGULARITY_CONTAINER", raising=False)
    change = {k: v if v.startswith("pkg:") else str(tmp_path / v) for k, v in change.items()}
    checks = run_checks(make_job(tmp_path, **{section: change}), fake())
    failed = failures(checks)
    assert [c.name for c in failed] == [key]
    assert failed[0].detail.startswith(f"{key}: ") and failed[0].fix


def test_shards_without_manifest_and_missing_embeddings_fail(tmp_path: Path) -> None:
    cfg = make_job(tmp_path, data={"image_source": "cached", "augment": False})
    (tmp_path / "shards/val/manifest.json").unlink()
    (tmp_path / "emb/train").rmdir()
    failed = by_name(failures(doctor.job_checks(cfg)))
    assert set(failed) == {"data.val_shards", "data.train_embeddings"}
    assert "manifest.json" in failed["data.val_shards"].detail and "lit embed" in failed["data.train_embeddings"].fix


def test_the_prior_stage_needs_annotations_with_places(tmp_path: Path) -> None:
    cfg = make_job(tmp_path, pipeline={"stages": ["prior", "train"]})
    annotations = tmp_path / "inat" / "train.json"
    missing = by_name(doctor.job_checks(cfg))["prior.split"]
    assert missing.status == "fail" and str(annotations) in missing.detail and "pipeline.stages" in missing.fix
    annotations.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "date": "2019-06-01"}]}))
    unplaced = by_name(doctor.job_checks(cfg))["prior.split"]
    assert unplaced.status == "warn" and "latitude" in unplaced.detail
    annotations.write_text(json.dumps({"images": [{"id": 1, "latitude": 52.1, "longitude": 4.3, "date": "2019-06-01"}]}))
    assert by_name(doctor.job_checks(cfg))["prior.split"].status == "ok"
    assert "prior.split" not in by_name(doctor.job_checks(make_job(tmp_path / "without")))  # no prior stage: no check


def test_run_dir_must_be_writable(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    cfg = make_job(tmp_path, run_dir=str(tmp_path / "afile" / "run"))
    check = by_name(doctor.job_checks(cfg))["run_dir"]
    assert check.status == "fail" and "not a folder" in check.detail


def test_image_check_is_skipped_inside_the_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/lit.sif")
    cfg = make_job(tmp_path, container={"image": "/host/only/lit.sif"})
    assert by_name(doctor.job_checks(cfg))["container.image"].status == "ok"


# ---------------------------------------------------------------- report and CLI


def test_report_prints_every_check_literally() -> None:
    checks = [Check("a", "ok", "fine"), Check("b", "fail", "broken [not markup]", "do [this]")]
    console = Console(record=True, width=200)
    console.print(report(checks))
    text = console.export_text()
    assert "broken [not markup]" in text and "do [this]" in text and "FAIL" in text
    assert not ok(checks) and ok(checks[:1])


def test_parse_capability() -> None:
    assert parse_capability("7.0") == parse_capability("sm_70") == parse_capability("70") == (7, 0)
    assert parse_capability("12.0") == (12, 0)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_capability("volta")


def run_cli(monkeypatch: pytest.MonkeyPatch, query: DeviceQuery, *argv: str) -> int:
    monkeypatch.setattr(DeviceQuery, "from_torch", classmethod(lambda cls: query))
    parser = argparse.ArgumentParser()
    doctor.add_arguments(parser)
    return doctor.run(parser.parse_args(list(argv)))


def test_cli_exit_code_and_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(monkeypatch, fake(), "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and {c["name"] for c in out["checks"]} >= {"torch", "GPUs", "cuDNN", "NCCL"}
    assert run_cli(monkeypatch, fake(arch_list=CU130_ARCHS), "--json") == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False
    assert run_cli(monkeypatch, fake(gpus=(), arch_list=CU130_ARCHS), "--arch", "7.0", "--json") == 1


def test_cli_with_config_and_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(f"run_dir: {tmp_path / 'run'}\ndata:\n  root: {tmp_path / 'nowhere'}\n  val_shards: {tmp_path / 'nowhere' / 'val'}\n")
    assert run_cli(monkeypatch, fake(), "--config", str(job), f"data.train_shards={tmp_path}", "--json") == 1
    failed = {c["name"] for c in json.loads(capsys.readouterr().out)["checks"] if c["status"] == "fail"}
    assert {"data.root", "data.train_shards", "data.val_shards"} <= failed


def test_from_torch_reads_this_machine() -> None:
    q = DeviceQuery.from_torch()
    assert q.torch_version and isinstance(q.gpus, tuple) and isinstance(q.arch_list, tuple)


@pytest.mark.timeout(180)
def test_real_doctor_without_gpu_exits_0_with_a_warning() -> None:
    """`python -m lit doctor` on this machine, GPUs hidden: the no-GPU case is a warning."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "lit", "doctor", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    gpus = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}["GPUs"]
    assert gpus["status"] == "warn" and "no CUDA GPU visible: training runs on the CPU" in gpus["detail"]
