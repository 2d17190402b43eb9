"""A folder of shards with its manifest.json: image shards from `lit shards`, embedding shards from `lit embed`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit.configlib import ConfigError


@dataclass(frozen=True)
class ShardFolder:
    """The shards of a folder in manifest order, and how many samples they hold."""

    path: Path
    urls: list[str]
    samples: int
    manifest: dict[str, Any]

    @property
    def categories_file(self) -> Path:
        return self.path / "categories.json"


def _shard_samples(entry: dict[str, Any]) -> int:
    for k in ("samples", "count", "num_samples"):
        if k in entry:
            return int(entry[k])
    raise KeyError("samples")


def open_folder(path: str | Path, key: str, what: str = "lit shards") -> ShardFolder:
    """Read `path/manifest.json`; errors name the config key and the command that makes the folder."""
    folder = Path(path)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError("", key, f"{folder} has no manifest.json: build it with `{what}` first")
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["shards"]
        urls = [str((folder / e["name"]).resolve()) for e in entries]
        samples = sum(_shard_samples(e) for e in entries)
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError("", key, f"{manifest_path} is not a shard manifest ({err}): rebuild it with `{what}`") from err
    missing = [u for u in urls if not Path(u).is_file()]
    if missing:
        raise ConfigError("", key, f"{len(missing)} shards listed in {manifest_path} are missing, e.g. {missing[0]}: rebuild with `{what}`")
    if not urls or samples == 0:
        raise ConfigError("", key, f"{folder} holds no samples")
    return ShardFolder(folder, urls, samples, manifest)
