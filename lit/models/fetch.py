"""Downloads and staging for `lit models prepare`: the towers come through huggingface_hub and open_clip's own calls
and are written beside their targets under temporary names, then put in place."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from lit.configlib import ConfigError
from lit.io import atomic_write, fsync_dir, write_json
from lit.models.plans import ImagePlan, TextPlan
from lit.models.verify import PREPARE, TEXT_SOURCE, TEXT_SUMS, sha256_file, sums_text

TEXT_ALLOW = ["*.json", "*.txt", "*.model", "*.safetensors", "README.md"]
"""Files of a Hugging Face text repo that a transformers text tower needs (config, tokenizer, weights)."""
TEXT_IGNORE = ["onnx/*", "openvino/*", "coreml/*", "tf/*", "flax/*", ".*"]
"""Other runtimes' exports in sentence-transformers repos: hundreds of MB the job never reads."""
TEXT_BIN = ["pytorch_model*.bin"]
"""The weights of repos without safetensors (downloaded only then)."""


# ---------------------------------------------------------------- downloads (real huggingface_hub / open_clip calls)


def snapshot(repo_id: str, cache_dir: str | None, job: str) -> tuple[Path, list[str]]:
    """The cached snapshot folder of `repo_id` (downloaded when needed) and the patterns of the files to take."""
    from huggingface_hub import snapshot_download

    patterns = list(TEXT_ALLOW)
    try:
        folder = Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=patterns, ignore_patterns=TEXT_IGNORE))
        if not _text_weights(folder, patterns):
            patterns += TEXT_BIN
            folder = Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=patterns, ignore_patterns=TEXT_IGNORE))
    except Exception as err:  # huggingface_hub's errors (not found, gated, offline and not cached, network) all end here
        raise ConfigError(job, "model.text_pretrained", f"{repo_id}: snapshot_download failed: {type(err).__name__}: "
                          f"{first_line(err)} (on a login node with network, check the id at https://huggingface.co/{repo_id}; "
                          f"with HF_HUB_OFFLINE=1 it must already be in the cache {cache_dir or 'of huggingface_hub'})") from err
    if not _text_weights(folder, patterns):
        raise ConfigError(job, "model.text_pretrained", f"{repo_id} has no model.safetensors or pytorch_model.bin ({folder})")
    return folder, patterns


def _wanted(rel: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) for p in patterns) and not any(fnmatch.fnmatch(rel, p) for p in TEXT_IGNORE)


def files(folder: Path, patterns: list[str]) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and _wanted(p.relative_to(folder).as_posix(), patterns))


def _text_weights(folder: Path, patterns: list[str]) -> list[str]:
    return [f for f in files(folder, patterns)
            if "/" not in f and (f.endswith(".safetensors") or fnmatch.fnmatch(f, "pytorch_model*.bin"))]


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def download_checkpoint(plan: ImagePlan, cache_dir: str | None, job: str) -> Path:
    from open_clip.pretrained import download_pretrained

    try:
        path = download_pretrained(plan.pretrained_cfg, prefer_hf_hub=True, cache_dir=cache_dir)
    except Exception as err:  # FileNotFoundError from the hub path, URLError/RuntimeError from the URL path
        where = plan.pretrained_cfg.get("hf_hub") or plan.pretrained_cfg.get("url")
        raise ConfigError(job, "model.image_pretrained", f"{plan.label}: open_clip's download_pretrained failed ({where}): "
                          f"{type(err).__name__}: {first_line(err)} (run on a login node with network; with HF_HUB_OFFLINE=1 "
                          f"the checkpoint must already be in the cache {cache_dir or 'of huggingface_hub'})") from err
    if not path or not Path(path).is_file():
        raise ConfigError(job, "model.image_pretrained", f"{plan.label}: open_clip's pretrained cfg names no download")
    return Path(path)


# ---------------------------------------------------------------- staging: temporary names beside the targets


def staging_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.lit-prepare-{os.getpid()}")


def remove(path: Path) -> None:
    """Remove a staged file or folder if it is there (its parent may be missing, or not even a folder)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.is_file() or path.is_symlink():
        path.unlink(missing_ok=True)


def stage_text(plan: TextPlan, snapshot: Path, patterns: list[str]) -> Path:
    staged = staging_name(plan.target)
    remove(staged)
    staged.mkdir(parents=True)
    for rel in files(snapshot, patterns):
        out = staged / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(snapshot / rel, out)  # follows the cache's links: the job's folder holds the bytes
    write_json(staged / TEXT_SOURCE, {"repo_id": plan.repo_id, "revision": snapshot.name, "prepared_by": PREPARE})
    sums = {rel: sha256_file(staged / rel) for rel in files(staged, ["*"]) if rel != TEXT_SUMS}
    atomic_write(staged / TEXT_SUMS, sums_text(sums))
    return staged


@contextlib.contextmanager
def writing(job: str, key: str, target: Path) -> Iterator[None]:
    """An OSError while writing beside `target` as a ConfigError naming the key (a read-only or full file system)."""
    try:
        yield
    except OSError as err:
        raise ConfigError(job, key, f"cannot write beside {target}: {err.strerror or err} ({err.filename or target}): "
                          "choose a folder you can write (and bind it into the container), or free space") from err


def put_folder(staged: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.lit-old-{os.getpid()}")
        remove(old)
        os.replace(target, old)
    os.replace(staged, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
