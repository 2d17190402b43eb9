"""The prepared towers' sha256 sums and where they came from, checked before a job trains.

`lit models prepare` writes, beside the image tower's weights file `W`, the files `W.sha256`
(one `sha256sum` line) and `W.source.json` (the open_clip `NAME/TAG` and its activation), and,
inside the text tower's folder, `SHA256SUMS` (one line per file, `sha256sum -c` reads it) and
`lit-source.json` (the Hugging Face id and revision). `model_checks` turns them into doctor
checks: a missing file, a sum that does not match, or a file prepared from another source than
the job names fails, and the fix is the command to run. Weights without a sums file (a
`pkg:` tower, a user's own file) are reported as not verified, never failed for that alone.

Nothing here imports torch: `lit doctor` stays quick. Hashing reads every byte (a ViT-L/14 image
tower is 1.2 GB: a few seconds).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from lit.checklist import Check
from lit.config import Config
from lit.io import file_sha256

SUMS_SUFFIX = ".sha256"
"""Beside an image weights file `W`: `W.sha256`."""
SOURCE_SUFFIX = ".source.json"
"""Beside an image weights file `W`: `W.source.json`."""
TEXT_SUMS = "SHA256SUMS"
"""Inside a text tower folder: every file's sha256, relative paths."""
TEXT_SOURCE = "lit-source.json"
"""Inside a text tower folder: the Hugging Face id and revision it was prepared from."""
PREPARE = "lit models prepare"
_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


# ---------------------------------------------------------------- sums


sha256_file = file_sha256
"""Hex sha256 of a file's bytes (lit.io's)."""


def sums_text(entries: dict[str, str]) -> str:
    """`sha256sum` lines (`HEX  NAME`) of `{name: hex}`, sorted by name."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(entries.items()))


def read_sums(path: str | Path) -> dict[str, str]:
    """`{name: hex}` of a `sha256sum` file; ValueError naming the line when one is not `HEX  NAME`."""
    entries: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        m = _SUM_LINE.match(line)
        if not m:
            raise ValueError(f"{path}:{number} is not a `sha256sum` line: {line[:80]!r}")
        entries[m.group(2)] = m.group(1)
    if not entries:
        raise ValueError(f"{path} lists no file")
    return entries


def sums_path(weights: str | Path) -> Path:
    path = Path(weights).expanduser()
    return path.with_name(path.name + SUMS_SUFFIX)


def source_path(weights: str | Path) -> Path:
    path = Path(weights).expanduser()
    return path.with_name(path.name + SOURCE_SUFFIX)


def folder_problems(folder: Path, sums: dict[str, str]) -> list[str]:
    """What differs between `folder` and its sums: `NAME (missing)`, `NAME (sha256 differs)`."""
    problems = []
    for name, digest in sorted(sums.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} (missing)")
        elif sha256_file(path) != digest:
            problems.append(f"{name} (sha256 differs)")
    return problems


def read_source(path: Path) -> dict[str, Any] | None:
    """The provenance record, or None when absent or unreadable (it is advisory; the sums are the check)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------- the job's model config, without torch


def raw_model_config(cfg: Config) -> dict[str, Any] | None:
    """The job's open_clip model config as written (`pkg:` values kept), or None when it cannot be found."""
    if cfg.model.config is not None:
        return copy.deepcopy(cfg.model.config)
    project = Path(__file__).resolve().parents[1] / "model_configs" / f"{cfg.model.name}.json"
    if project.is_file():
        data = json.loads(project.read_text())
        return data if isinstance(data, dict) else None
    import open_clip  # an open_clip registry name: only then is open_clip needed

    found = open_clip.get_model_config(cfg.model.name)
    return dict(found) if found else None


def config_key(cfg: Config, key: str) -> str:
    """The dotted key a user edits for `key` of the model config: inline (model.config.KEY) or named."""
    return f"model.config.{key}" if cfg.model.config is not None else f"model.name ({cfg.model.name}: {key})"


def text_folder_value(model_cfg: dict[str, Any] | None) -> str:
    text_cfg = (model_cfg or {}).get("text_cfg") or {}
    value = text_cfg.get("hf_model_name", "")
    return value if isinstance(value, str) else ""


def job_hint(cfg: Config) -> str:
    """How to name the job file in a fix: its usual path when it is there, else JOB.yaml."""
    usual = Path("jobs") / f"{cfg.name}.yaml"
    return str(usual) if usual.is_file() else "JOB.yaml"


def _shown(value: str) -> str:
    path = Path(value).expanduser()
    return value if path.is_absolute() else f"{value} ({path.resolve()})"


def _size(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


# ---------------------------------------------------------------- checks


def model_checks(cfg: Config) -> list[Check]:
    """Doctor checks of the job's prepared towers: files present, sha256 sums, source and activation.

    Returns a `model.image_weights` check when the image weights are a file the job loads (a
    `pkg:` tower and a whole-model `model.pretrained` checkpoint are left to the doctor's own
    check), a `model.config.quick_gelu` check when the prepared weights' activation is known, and
    a check of the text tower's folder when `text_cfg.hf_model_name` is a path or is prepared.
    """
    command = f"{PREPARE} {job_hint(cfg)}"
    fix = f"on a login node: {command} (docs/models.md), and bind its folder into the container (container.binds)"
    try:
        model_cfg = raw_model_config(cfg)
    except (OSError, ValueError):
        model_cfg = None
    checks: list[Check] = []
    m = cfg.model
    if m.image_pretrained and (not m.image_weights or m.image_weights.startswith("pkg:")):
        checks.append(Check("model.image_weights", "fail",
                            f"model.image_weights: {m.image_weights or 'empty'} is not a file path, but model.image_pretrained "
                            f"({m.image_pretrained}) names a tower to prepare", f"set model.image_weights to a local file, then {fix}"))
    elif m.image_weights and not m.pretrained and not m.image_weights.startswith("pkg:"):
        checks += _image_checks(cfg, model_cfg, command, fix)
    text = _text_check(cfg, model_cfg, command, fix)
    if text is not None:
        checks.append(text)
    return checks


def _image_checks(cfg: Config, model_cfg: dict[str, Any] | None, command: str, fix: str) -> list[Check]:
    key, m = "model.image_weights", cfg.model
    path = Path(m.image_weights).expanduser()
    shown = _shown(m.image_weights)
    own_fix = f"set {key} to a local weights file, or bind its folder into the container"
    if m.image_pretrained:
        missing_fix = fix
    else:
        missing_fix = f"{own_fix}; or name its source in model.image_pretrained (e.g. ViT-L-14/openai) and run {command}"
    if not path.exists():
        return [Check(key, "fail", f"{key}: {shown} does not exist", missing_fix)]
    if not path.is_file():
        return [Check(key, "fail", f"{key}: {shown} is not a file", missing_fix)]
    sums = sums_path(path)
    if not sums.is_file():
        if m.image_pretrained:
            return [Check(key, "warn", f"{key}: {shown} has no {sums.name}: not verified (not written by {PREPARE})", fix)]
        return [Check(key, "ok", f"{shown} ({_size(path.stat().st_size)}; no {sums.name}: not verified)")]
    try:
        listed = read_sums(sums)
        expected = listed.get(path.name) or next(iter(listed.values()))
    except (OSError, ValueError) as err:
        return [Check(key, "fail", f"{key}: {sums.name} beside {shown} cannot be read: {err}", fix)]
    actual = sha256_file(path)
    if actual != expected:
        return [Check(key, "fail", f"{key}: {shown} has sha256 {actual[:16]}…, {sums.name} says {expected[:16]}…: "
                      "the file is damaged, truncated or was replaced", fix)]
    source = read_source(source_path(path)) or {}
    origin = str(source.get("pretrained", ""))
    if m.image_pretrained and origin and origin != m.image_pretrained:
        return [Check(key, "fail", f"{key}: {shown} holds the image tower of {origin}, but model.image_pretrained is "
                      f"{m.image_pretrained}", fix)]
    checks = [Check(key, "ok", f"{shown} sha256 ok ({_size(path.stat().st_size)}{', from ' + origin if origin else ''})")]
    if "quick_gelu" in source and model_cfg is not None:
        weights_qg, job_qg = bool(source["quick_gelu"]), bool(model_cfg.get("quick_gelu", False))
        qkey = config_key(cfg, "quick_gelu")
        if weights_qg != job_qg:
            checks.append(Check("model.config.quick_gelu", "fail",
                                f"{qkey}: the job builds the image tower with {_act(job_qg)}, but {origin or shown} was trained "
                                f"with {_act(weights_qg)}: its features would silently differ from the checkpoint's",
                                f"set quick_gelu: {str(weights_qg).lower()} at the top level of the model config "
                                f"({'model.config' if cfg.model.config is not None else 'model.name ' + cfg.model.name})"))
        else:
            checks.append(Check("model.config.quick_gelu", "ok", f"{_act(job_qg)}, as {origin or shown} was trained"))
    return checks


def _act(quick_gelu: bool) -> str:
    return "QuickGELU" if quick_gelu else "GELU"


def looks_like_hub_id(value: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", value)) and not value.startswith(".")


def _text_check(cfg: Config, model_cfg: dict[str, Any] | None, command: str, fix: str) -> Check | None:
    m = cfg.model
    value = text_folder_value(model_cfg)
    key = config_key(cfg, "text_cfg.hf_model_name")
    if m.text_pretrained and (not value or value.startswith("pkg:")):
        return Check(key, "fail", f"{key}: {value or 'not set'} is no folder, but model.text_pretrained ({m.text_pretrained}) "
                     "names a tower to prepare", f"set text_cfg.hf_model_name to a local folder, then {fix}")
    if not value or value.startswith("pkg:"):
        return None
    path = Path(value).expanduser()
    shown = _shown(value)
    if not path.exists():
        if m.text_pretrained:
            return Check(key, "fail", f"{key}: {shown} does not exist", fix)
        if looks_like_hub_id(value):
            return Check(key, "warn", f"{key}: {value} is a Hugging Face id, not a local folder: loading it needs the network, "
                         "which compute nodes often lack",
                         f"set model.text_pretrained: {value} and text_cfg.hf_model_name to a local folder, then {fix}")
        return Check(key, "fail", f"{key}: {shown} does not exist",
                     f"put the text tower's folder there, or set model.text_pretrained to its Hugging Face id and run {command}")
    if not path.is_dir():
        return Check(key, "fail", f"{key}: {shown} is not a folder", fix)
    sums = path / TEXT_SUMS
    if not sums.is_file():
        if m.text_pretrained:
            return Check(key, "warn", f"{key}: {shown} has no {TEXT_SUMS}: not verified (not written by {PREPARE})", fix)
        return Check(key, "ok", f"{shown} (no {TEXT_SUMS}: not verified)")
    try:
        listed = read_sums(sums)
    except (OSError, ValueError) as err:
        return Check(key, "fail", f"{key}: {TEXT_SUMS} in {shown} cannot be read: {err}", fix)
    problems = folder_problems(path, listed)
    if problems:
        more = f", … ({len(problems) - 4} more)" if len(problems) > 4 else ""
        return Check(key, "fail", f"{key}: {shown}: {len(problems)} of {len(listed)} file(s) do not match {TEXT_SUMS}: "
                     f"{', '.join(problems[:4])}{more}", fix)
    source = read_source(path / TEXT_SOURCE) or {}
    origin = str(source.get("repo_id", ""))
    if m.text_pretrained and origin and origin != m.text_pretrained:
        return Check(key, "fail", f"{key}: {shown} holds {origin}, but model.text_pretrained is {m.text_pretrained}", fix)
    size = sum((path / name).stat().st_size for name in listed)
    return Check(key, "ok", f"{shown}: {len(listed)} files sha256 ok ({_size(size)}{', from ' + origin if origin else ''})")
