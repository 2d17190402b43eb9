"""What a sweep is: a job YAML and a list or grid of named override sets (its members).

From the command line, `python -m launcher sweep JOB.yaml train.warmup_steps=500,1000,2000`: an
override whose value has commas (and is not a YAML list `[a, b]`) is an axis of the grid; the
others apply to every member. A sweep file (jobs/sweeps/*.yaml) says the same in YAML:

    job: ../inat21-vitl14-warmup1000.yaml   # relative to the sweep file
    sweep_dir: /scratch/inat21/sweeps/warmup
    overrides: [slurm.array_parallelism=3]
    members:
      - {name: warmup500, overrides: [train.warmup_steps=500]}
    grid: {train.seed: [0, 1]}               # each member x each grid point
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lit.config import Config, load_config
from lit.configlib import ConfigError, from_dict, read_yaml
from lit.errors import UsageError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PAPERS = ("", "warmup")
PRIORS_DIR = "priors"
"""`SWEEP_DIR/priors/KEY`: a location prior shared by the members whose prior is made the same way (`prior_key`)."""


@dataclass(frozen=True)
class MemberSpec:
    """One member of a sweep: a name and the overrides that make it."""

    name: str
    """Member name: its run folder under sweep_dir (letters, digits, `.`, `_`, `-`)."""
    overrides: tuple[str, ...] = ()
    """section.key=value overrides of this member, on top of the sweep's."""


@dataclass(frozen=True)
class SweepSpec:
    """A sweep file: the job every member starts from, and how the members differ."""

    job: str
    """The job YAML every member starts from (a relative path is relative to the sweep file)."""
    name: str = ""
    """Name of the sweep (default: the sweep file's name); members are named NAME-MEMBER in SLURM."""
    sweep_dir: str = ""
    """Folder of the sweep: one run folder per member, sweep.json, report.md and plots (default: runs/sweeps/NAME)."""
    overrides: tuple[str, ...] = ()
    """Overrides applied to every member."""
    members: tuple[MemberSpec, ...] = ()
    """Named members; with a grid, each member is crossed with each grid point."""
    grid: dict[str, Any] = field(default_factory=dict)
    """Dotted key → list of values; every combination is a member (named key-value_...)."""
    paper: Literal["", "warmup"] = ""
    """Published figures the report puts beside the members: warmup (the paper's warm-up 500/1000/2000 runs)."""


@dataclass(frozen=True)
class Member:
    """A resolved member: its name, its overrides and its config (run_dir under the sweep's folder)."""

    index: int
    name: str
    overrides: tuple[str, ...]
    cfg: Config


def _value_name(value: Any) -> str:
    text = str(value).replace("/", "-").replace(" ", "")
    return re.sub(r"[^A-Za-z0-9._-]", "", text) or "x"


def point_name(point: dict[str, Any]) -> str:
    """`train.warmup_steps=500, train.seed=1` → `warmup_steps-500_seed-1`."""
    return "_".join(f"{key.rsplit('.', 1)[-1]}-{_value_name(value)}" for key, value in point.items())


def split_cli(overrides: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Command-line overrides → (fixed overrides, grid axes); `k=a,b` is an axis, `k=[a,b]` a list value."""
    fixed: list[str] = []
    grid: dict[str, list[str]] = {}
    for text in overrides:
        if "=" not in text:
            raise ConfigError("command line", text, "an override has the form section.key=value (a,b,c: one member each)")
        key, raw = text.split("=", 1)
        if "," in raw and not raw.strip().startswith(("[", "{")):
            values = [v.strip() for v in raw.split(",")]
            if not all(values):
                raise ConfigError("command line", key, f"empty value in {raw!r}: write a,b,c")
            grid[key] = values
        else:
            fixed.append(text)
    return fixed, grid


def _points(grid: dict[str, Any], source: str) -> list[dict[str, Any]]:
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(source, f"grid.{key}", f"must be a non-empty list of values, got {values!r}")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _override(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    return f"{key}={value}"


def expand(spec: SweepSpec, source: str) -> list[tuple[str, tuple[str, ...]]]:
    """(member name, member overrides) of every member, in order."""
    base = list(spec.members) or [MemberSpec(name="")]
    points = _points(spec.grid, source) if spec.grid else [{}]
    out: list[tuple[str, tuple[str, ...]]] = []
    for member in base:
        for point in points:
            parts = [p for p in (member.name, point_name(point)) if p]
            name = "_".join(parts) or "base"
            out.append((name, tuple(member.overrides) + tuple(_override(k, v) for k, v in point.items())))
    names = [n for n, _ in out]
    for name in names:
        if not NAME.match(name):
            raise ConfigError(source, "members", f"member name {name!r} is not a folder name: use letters, digits, '.', '_', '-'")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(source, "members", f"member names repeat: {', '.join(dupes)} (give each member its own name)")
    if len(out) < 1:
        raise ConfigError(source, "members", "a sweep needs at least one member")
    return out


def load_spec(path: str | Path, extra: Sequence[str] = ()) -> tuple[SweepSpec, Path]:
    """A sweep file (its job path made absolute); command-line overrides `extra` (with axes) are added."""
    path = Path(path)
    data = read_yaml(path)
    spec = from_dict(SweepSpec, data, str(path))
    fixed, grid = split_cli(list(extra))
    job = Path(spec.job) if Path(spec.job).is_absolute() else path.parent / spec.job
    spec = SweepSpec(job=str(job), name=spec.name or path.stem, sweep_dir=spec.sweep_dir,
                     overrides=spec.overrides + tuple(fixed), members=spec.members, grid={**spec.grid, **grid}, paper=spec.paper)
    return spec, path


def from_cli(job: str | Path, overrides: list[str], name: str = "", sweep_dir: str = "", paper: str = "") -> SweepSpec:
    """The sweep of a job YAML and command-line overrides (a,b,c values are its axes)."""
    fixed, grid = split_cli(overrides)
    if not grid:
        raise ConfigError("command line", "overrides", "no axis to sweep: give at least one key=a,b,c (or a sweep file)")
    if paper not in PAPERS:
        raise UsageError("paper", f"{paper!r} is not one of {', '.join(p for p in PAPERS if p)}")
    stem = name or Path(job).stem + "-" + "-".join(k.rsplit(".", 1)[-1] for k in grid)
    return SweepSpec(job=str(job), name=stem, sweep_dir=sweep_dir, overrides=tuple(fixed), grid=dict(grid),
                     paper=paper)  # type: ignore[arg-type]


def is_sweep_file(path: str | Path) -> bool:
    """A YAML whose top level names a `job` (a job YAML never has that key)."""
    try:
        return "job" in read_yaml(path)
    except ConfigError:
        return False


def prior_key(cfg: Config) -> str:
    """What makes a location prior: the annotations (data.root, prior.split) and the settings its weights depend on."""
    from lit.prior.train import FINGERPRINT_KEYS

    return json.dumps({"root": cfg.data.root, "prior": {k: getattr(cfg.prior, k) for k in FINGERPRINT_KEYS}}, sort_keys=True)


def shared_prior(cfg: Config, sweep_dir: Path) -> Config:
    """A member with the prior stage and no prior.out of its own keeps its prior in SWEEP_DIR/priors/KEY, with its equals."""
    if "prior" not in cfg.pipeline.stages or cfg.prior.out:
        return cfg
    digest = hashlib.sha256(prior_key(cfg).encode()).hexdigest()[:12]
    return replace(cfg, prior=replace(cfg.prior, out=str(sweep_dir / PRIORS_DIR / digest)))


def resolve(spec: SweepSpec, source: str) -> tuple[Path, list[Member]]:
    """The sweep folder (absolute) and every member with its loaded, validated config (`shared_prior`: where its prior is)."""
    sweep_dir = Path(spec.sweep_dir or f"runs/sweeps/{spec.name}").expanduser().resolve()
    members = []
    for i, (name, overrides) in enumerate(expand(spec, source)):
        allover = [*spec.overrides, *overrides, f"name={spec.name}-{name}", f"run_dir={sweep_dir / name}"]
        try:
            cfg = load_config(spec.job, allover)
        except ConfigError as err:
            raise ConfigError(source, f"members.{name}", str(err)) from err
        members.append(Member(i, name, tuple(overrides), shared_prior(cfg, sweep_dir)))
    return sweep_dir, members


__all__ = ["Member", "MemberSpec", "PRIORS_DIR", "SweepSpec", "expand", "from_cli", "is_sweep_file", "load_spec", "point_name",
           "prior_key", "resolve", "shared_prior", "split_cli"]
