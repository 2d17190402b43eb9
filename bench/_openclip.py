"""OpenCLIP's own trainer (`python -m open_clip_train.main`) in a virtual environment of its own.

open_clip_train 3.3.0 ships inside the `open_clip_torch` wheel but needs `webdataset<=0.2.86`
and pandas, while the product runs webdataset 1.x. The bench makes bench/out/venv-openclip
(ignored by git): its own site-packages hold exactly the packages that must differ
(webdataset 0.2.86, pandas), and a `.pth` file appends the project venv's site-packages for
everything else (torch, timm, open_clip_torch 3.3.0 with its open_clip_train: pip sees the
pinned version there and leaves it), so no 5 GB torch is copied. Its own packages come first
on sys.path, so its webdataset 0.2.86 wins over the project's 1.x; `ensure` checks that.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
VENV = OUT / "venv-openclip"
ENTRY = Path(__file__).resolve().parent / "_openclip_entry.py"
PACKAGES = ("open_clip_torch==3.3.0", "webdataset==0.2.86", "pandas")
# One log line per step: "... Batch (t): 1.234, 6.48254/s, 6.48254/s/gpu LR: ..." (the last step's rate)
STEP_LINE = re.compile(r"Train Epoch: \d+ \[\s*(\d+)/\d+.*?Batch \(t\): [\d.]+, ([\d.eE+-]+)/s,")


def python() -> Path:
    return VENV / "bin" / "python"


def _site_packages(py: Path | str) -> str:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def check() -> dict[str, str]:
    """Versions as the venv sees them; raises CalledProcessError when it is broken."""
    code = ("import json, webdataset, open_clip, open_clip_train, pandas, torch; "
            "print(json.dumps({'webdataset': webdataset.__version__, 'open_clip': open_clip.__version__, "
            "'pandas': pandas.__version__, 'torch': torch.__version__, 'open_clip_train': open_clip_train.__file__}))")
    out = subprocess.run([str(python()), "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ensure() -> dict[str, str]:
    """Create (once) and verify the venv; returns the versions it imports."""
    marker = VENV / ".bench-ready"
    if marker.is_file():
        try:
            versions = check()
            if versions["webdataset"] == "0.2.86" and versions["open_clip"] == "3.3.0":
                return versions
        except (subprocess.CalledProcessError, ValueError, KeyError):
            pass
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    site = Path(_site_packages(python()))
    (site / "lit-bench-project.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = subprocess.run([str(python()), "-m", "pip", "install", "-q", "--no-deps", *PACKAGES],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(PACKAGES)} into {VENV} failed:\n{pip.stdout}{pip.stderr}")
    versions = check()
    if versions["webdataset"] != "0.2.86" or versions["open_clip"] != "3.3.0":
        raise RuntimeError(f"{VENV} imports webdataset {versions['webdataset']} and open_clip {versions['open_clip']}, "
                           "not 0.2.86 and 3.3.0")
    marker.write_text(json.dumps(versions) + "\n")
    return versions


def command(model_config: Path, shards: str, *, batch_size: int, steps: int, workers: int, run_dir: Path,
            seed: int = 0) -> list[str]:
    """The open_clip_train command line for `steps` fp32 LiT steps on `shards` (a brace pattern)."""
    return [
        str(python()), str(ENTRY), str(model_config),
        "--train-data", shards, "--dataset-type", "webdataset", "--dataset-resampled",
        "--train-num-samples", str(batch_size * steps), "--batch-size", str(batch_size), "--epochs", "1",
        "--workers", str(workers), "--model", model_config.stem, "--precision", "fp32",
        "--lock-image", "--lock-image-unlocked-groups", "0", "--lr", "5e-4", "--wd", "0.1", "--warmup", "0",
        "--log-every-n-steps", "1", "--save-frequency", "0", "--report-to", "", "--logs", "none",
        "--name", run_dir.name, "--seed", str(seed),
    ]


def step_rates(log: str) -> list[float]:
    """Samples/s of each step, in step order, from open_clip_train's log lines."""
    return [float(m.group(2)) for m in STEP_LINE.finditer(log)]
