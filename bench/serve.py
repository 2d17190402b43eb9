"""In the field: the ONNX export against torch eager, and `lit serve` under a bounded load on loopback.

Encoder: the embedded default tower (EfficientNet-Lite0, 224 px) as a run checkpoint, exported
with `lit.field.onnx_export.export_onnx` (verified against torch on the first validation
images: the embedding difference is reported). Images/s per core of the image encoder alone
(preprocessed inputs, decoding excluded), onnxruntime with one intra-op thread against torch
eager with `torch.set_num_threads(1)`, at batch 1 and batch 32, interleaved, ratio pair by pair.

Load: `lit serve EXPORT` in a subprocess on 127.0.0.1; 200 POST /predict of toy JPEGs (500x375)
8 at a time, per round; latency percentiles (p50, p90, p99) and requests/s. Nothing here is
a test: tests/field only checks that every request is answered.
"""

from __future__ import annotations

import http.client
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench import _common as common

REPEATS = 3
BATCHES = (1, 32)
IMAGES = {1: 32, 32: 64}  # images per measured run at each batch size
REQUESTS, CONCURRENCY = 200, 8
SIZE = (500, 375)


def make_run(root: Path, model_name: str = "lit-effnet-lite0-minilm", image_weights: str = "pkg:efficientnet-lite0",
             per_class: int = 2, size: tuple[int, int] = SIZE) -> Path:
    """Toy validation shards and a run directory holding one checkpoint of the model (untrained text tower)."""
    from lit import checkpoint
    from lit.config import CaptionConfig, Config, ShardConfig, config_from_dict, dump_config
    from lit.configlib import to_dict
    from lit.data.shards import build_shards
    from lit.data.toy import write_toy_inat
    from lit.model import build_model, fingerprint

    run = root / "run"
    if checkpoint.list_checkpoints(run):
        return run
    write_toy_inat(root / "toy", seed=0, train_per_class=1, val_per_class=per_class, image_size=size, test_per_class=0)
    build_shards(root / "toy", "val", root / "val", ShardConfig(samples_per_shard=64, workers=1, shuffle=False),
                 CaptionConfig(), progress=False)
    tree = to_dict(Config())
    tree.update(run_dir=str(run))
    tree["model"].update(name=model_name, image_weights=image_weights)
    tree["data"].update(val_shards=str(root / "val"), image_source="raw", workers=0)
    tree["train"].update(device="cpu")
    cfg = config_from_dict(tree, "bench.serve")
    built = build_model(cfg.model)
    state = {"step": 1, "samples_seen": 0, "total_steps": 1, "epoch": 0, "rng": [], "world_size": 1,
             "model": {k: v for k, v in built.model.state_dict().items() if not k.startswith("visual.")},
             "optimizer": {}, "scaler": {}, "tower_fingerprint": fingerprint(built.model, built.preprocess_val),
             "config": dump_config(cfg)}
    checkpoint.save(run, state, keep_last=1)
    return run


def exported(root: Path, verify_limit: int = 64, **run_kwargs: Any) -> tuple[Path, Path, dict[str, Any]]:
    """(run, export folder, verification) of the bench model."""
    from lit.field.onnx_export import export_onnx

    run = make_run(root, **run_kwargs)
    out, check = export_onnx(run, root / "export", verify_limit=verify_limit)
    return run, out, check


def encoder_variants(run: Path, export: Path, batches: tuple[int, ...] = BATCHES,
                     images: dict[int, int] | None = None) -> dict[str, Callable[[], float]]:
    """images/s of each (engine, batch) on one core."""
    import torch

    from lit.field.onnx_predict import OnnxModel
    from lit.field.torch_model import CheckpointModel

    images = images or IMAGES
    onnx = OnnxModel.load(export, threads=1)
    torch_model = CheckpointModel.load(run, device="cpu")
    h, w = onnx.preprocess.size
    x = np.random.default_rng(0).normal(size=(max(images.values()), 3, h, w)).astype(np.float32)

    def rate(forward: Callable[[np.ndarray], Any], batch: int) -> Callable[[], float]:
        def go() -> float:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                forward(x[:batch])  # warm
                n = images[batch]
                start = time.perf_counter()
                for i in range(0, n, batch):
                    forward(x[i:i + batch])
                return n / (time.perf_counter() - start)
            finally:
                torch.set_num_threads(threads)
        return go

    out: dict[str, Callable[[], float]] = {}
    for b in batches:
        out[f"onnxruntime b{b}"] = rate(onnx.embed, b)
        out[f"torch b{b}"] = rate(lambda a: torch_model.embed(torch.from_numpy(a)), b)
    return out


def _post(port: int, data: bytes) -> float:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.jpg\"\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/predict", body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        res = conn.getresponse()
        res.read()
        if res.status != 200:
            raise RuntimeError(f"POST /predict answered {res.status}")
    finally:
        conn.close()
    return time.perf_counter() - start


def start_server(target: Path) -> tuple[subprocess.Popen[bytes], int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "PYTHONPATH": str(common.REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "lit", "serve", str(target), "--port", str(port)], cwd=common.REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"lit serve {target} did not start")


def load_round(port: int, photos: list[bytes], requests: int = REQUESTS, concurrency: int = CONCURRENCY) -> dict[str, float]:
    """One bounded load test: latency percentiles (ms) and requests/s."""
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(lambda i: _post(port, photos[i % len(photos)]), range(requests)))
    wall = time.perf_counter() - start
    pct = lambda q: 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "rps": requests / wall, "answered": len(latencies)}


def measure(root: Path, repeats: int = REPEATS, max_wait: float = 20.0, requests: int = REQUESTS,
            images: dict[int, int] | None = None, **run_kwargs: Any) -> dict[str, Any]:
    """Encoder rates, load rounds and the export's verification (`run_kwargs` pick another model: tests)."""
    run, export, check = exported(root, **run_kwargs)
    encoder = common.interleaved(encoder_variants(run, export, images=images), repeats, max_wait=max_wait)
    photos = common.jpegs(root / "toy", "val")[:16]
    proc, port = start_server(export)
    try:
        load_round(port, photos, requests=16)  # warm
        rounds = []
        for _ in range(repeats):
            common.settle(max_wait=max_wait)
            rounds.append(load_round(port, photos, requests))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return {"encoder": encoder, "load": rounds, "verification": check, "load_external": common.external_load()}


def rows(m: dict[str, Any]) -> list[dict[str, Any]]:
    enc, load, check = m["encoder"], m["load"], m["verification"]
    params = {"model": "lit-effnet-lite0-minilm (EfficientNet-Lite0 224 px)", "threads": 1, "images_per_run": IMAGES,
              "requests": REQUESTS, "concurrency": CONCURRENCY, "photo": f"toy JPEG {SIZE[0]}x{SIZE[1]}",
              "verification": {k: check[k] for k in ("images", "max_abs_diff", "top1_same", "tolerance")},
              "external_load_cores": m["load_external"]}
    out: list[dict[str, Any]] = []
    for b in sorted({int(k.rsplit("b", 1)[1]) for k in enc}):
        out += [
            {"metric": f"image encoder, onnxruntime, batch {b}, 1 core", "unit": "images/s", "values": enc[f"onnxruntime b{b}"],
             **({"params": params} if not out else {})},
            {"metric": f"image encoder, torch eager, batch {b}, 1 core", "unit": "images/s", "values": enc[f"torch b{b}"]},
            {"metric": f"image encoder, onnxruntime / torch, batch {b}", "unit": "ratio",
             "values": common.ratios(enc[f"onnxruntime b{b}"], enc[f"torch b{b}"])},
        ]
    for q in ("p50", "p90", "p99"):
        out.append({"metric": f"lit serve (ONNX) POST /predict latency {q}, {CONCURRENCY} concurrent", "unit": "ms",
                    "values": [r[q] for r in load]})
    out.append({"metric": f"lit serve (ONNX) throughput, {CONCURRENCY} concurrent", "unit": "requests/s", "values": [r["rps"] for r in load],
                "note": f"every one of the {REQUESTS} requests per round answered 200"})
    out.append({"metric": "ONNX vs torch image embedding (unit norm), max abs difference", "unit": "1e-6",
                "values": [1e6 * check["max_abs_diff"]],
                "note": f"on {check['images']} validation images (tolerance {check['tolerance']:.0e}), top-1 identical for "
                        f"{check['top1_same']}"})
    return out


def section(out: list[dict[str, Any]]) -> str:
    med = {r["metric"]: statistics.median(r["values"]) for r in out}
    lines = ["The image encoder alone on one core (preprocessed inputs), EfficientNet-Lite0 at 224 px:", ""]
    for b in BATCHES:
        lines.append(f"- batch {b}: onnxruntime {med[f'image encoder, onnxruntime, batch {b}, 1 core']:,.1f} images/s, torch eager "
                     f"{med[f'image encoder, torch eager, batch {b}, 1 core']:,.1f} "
                     f"({med[f'image encoder, onnxruntime / torch, batch {b}']:.2f}x)")
    lines += ["", f"`lit serve` on the ONNX export, {REQUESTS} requests {CONCURRENCY} at a time on loopback (decode + preprocess + "
              f"encoder per photo): p50 {med[f'lit serve (ONNX) POST /predict latency p50, {CONCURRENCY} concurrent']:,.0f} ms, "
              f"p99 {med[f'lit serve (ONNX) POST /predict latency p99, {CONCURRENCY} concurrent']:,.0f} ms, "
              f"{med[f'lit serve (ONNX) throughput, {CONCURRENCY} concurrent']:,.1f} requests/s."]
    return "\n".join(lines)


def run() -> list[dict[str, Any]]:
    out = rows(measure(common.OUT / "work" / "serve"))
    out.append({"section": "In the field: ONNX export and lit serve", "markdown": section(out)})
    return out
