"""Paper scale, on paper: 18 epochs of iNat2021 train on 2x8 V100, projected from measured FLOPs per sample.

Counted here (`FlopCounterMode` on the meta device, so nothing is computed): the frozen
ViT-L-14 forward per image, and the text tower's forward+backward per caption at the length
lit trims the paper's captions to (the longest caption of a 256-sample per-GPU batch, over
the real categories) and at the 77 tokens open_clip pads to. Measured here: JPEG decode plus
open_clip's train (and eval) transform of 500x375 images (iNat2021's size) on one core, the
data-loading ceiling of the raw path. Measured by the `embed` benchmark (earlier in the same
`make bench` run, else here): the share of its workers' one-core decode rate that `lit embed`'s
pipeline reaches, which scales the `lit embed` path's loading. The rest are stated assumptions
(ASSUMED below).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from typing import Any

import open_clip
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import _common as common
from bench import embed as embed_bench

REPEATS = 3
TRAIN_IMAGES = 2_686_843
EPOCHS = 18
ASSUMED = {
    "gpus": 16,  # 2 nodes x 8 V100 (jobs/inat21-vitl14-*.yaml)
    "v100_fp16_tensor_tflops": 125.0,  # V100 SXM2 datasheet peak; PCIe: 112
    "utilization": 0.40,  # sustained share of that peak in AMP training of matmul-bound towers
    "loader_cores_per_gpu": 4,  # the jobs' cpus_per_task 5: 4 loader workers + the training process
    "per_gpu_batch": 256,  # the jobs' data.batch_size
}


def image_flops() -> int:
    """ViT-L-14 forward FLOPs per 224-px image."""
    with torch.device("meta"):
        model = open_clip.CustomTextCLIP(**common.paper_shape().config)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.encode_image(torch.empty(1, 3, 224, 224, device="meta"))
    return counter.get_total_flops()


def text_flops(length: int) -> int:
    """Text tower forward+backward FLOPs per caption of `length` tokens (loss excluded: negligible)."""
    from lit.model import causal_mask_for

    with torch.device("meta"):
        model = open_clip.CustomTextCLIP(**common.paper_shape().config)
    tokens = torch.ones(4, length, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter, causal_mask_for(model, length):
        model.encode_text(tokens).sum().backward()
    return counter.get_total_flops() // 4


def trimmed_length(cats: list[Any], batch: int, batches: int = 200) -> tuple[float, float]:
    """(mean per-batch longest caption, mean caption) in tokens, paper recipe, classes drawn uniformly."""
    from lit.data.captions import caption

    tokenizer = open_clip.get_tokenizer("ViT-S-32")
    tokens = tokenizer([caption(c, "paper") for c in cats])
    lengths = (tokens != 0).sum(dim=1).tolist()
    rng = random.Random(0)
    longest = [max(rng.choices(lengths, k=batch)) for _ in range(batches)]
    return statistics.fmean(longest), statistics.fmean(lengths)


def decode_variants() -> tuple[dict[str, Callable[[], float]], int]:
    """Images/s on one core: PIL decode + open_clip's train / eval transform of 500x375 JPEGs."""
    data = common.jpegs(common.toy_root(1, 0, (500, 375)), "train")
    return {kind: common.decode_rate(data, open_clip.image_transform(224, is_train=kind == "train"))
            for kind in ("train", "eval")}, len(data)


def compute_hours(flop_per_sample: float, samples: float, utilization: float | None = None) -> float:
    """Hours of compute on the assumed cluster (at the assumed utilization, or the given one)."""
    a = ASSUMED
    util = a["utilization"] if utilization is None else utilization
    return flop_per_sample * samples / (a["gpus"] * a["v100_fp16_tensor_tflops"] * 1e12 * util) / 3600


def loading_hours(samples: float, decode_rate: float) -> float:
    """Hours of JPEG decoding and transforms by the assumed loader cores, each at `decode_rate` images/s."""
    return samples / (decode_rate * ASSUMED["gpus"] * ASSUMED["loader_cores_per_gpu"]) / 3600


def embed_share() -> tuple[list[float], dict[str, Any]]:
    """Per round, the share of its workers' one-core decode rate `lit embed` reached (bench.embed's figures) and their origin."""
    fig = embed_bench.cheap_figures(REPEATS)
    share = embed_bench.efficiency(fig["embed"], fig["decode_own"], int(fig["workers"]))
    about = {"measured_by": fig["measured_by"], "workers": fig["workers"], "external_load_cores": fig.get("external_load_cores"),
             "embed_images_s": round(statistics.median(fig["embed"]), 1),
             "decode_own_1core_images_s": round(statistics.median(fig["decode_own"]), 1)}
    return share, about


def run() -> list[dict[str, Any]]:

    cats, source = common.categories()
    f_img = image_flops()
    batch_len, mean_len = trimmed_length(cats, int(ASSUMED["per_gpu_batch"]))
    length = round(batch_len)
    f_trim, f_full = text_flops(length), text_flops(77)
    share, share_source = embed_share()
    variants, n_images = decode_variants()
    for v in variants.values():
        v()
    runs = common.interleaved(variants, REPEATS, max_wait=5.0)
    load = common.external_load()
    samples = EPOCHS * TRAIN_IMAGES
    med = statistics.median
    # what `lit embed`'s pipeline delivers per loader core: one core's eval-transform rate x the measured share
    embed_rates = [r * med(share) for r in runs["eval"]]
    # (label, FLOPs per sample, samples, decode rates or None) → projected hours per round: max(compute, loading)
    paths = {
        "open_clip_train (raw, 77 tokens)": (f_img + f_full, samples, runs["train"]),
        f"lit raw ({length} tokens)": (f_img + f_trim, samples, runs["train"]),
        "lit cached: `lit embed` once": (f_img, TRAIN_IMAGES, embed_rates),
        f"lit cached: 18 epochs on the cache ({length} tokens)": (f_trim, samples, None),
    }
    no_rates: list[float | None] = [None] * REPEATS
    projected = {k: [max(compute_hours(f, n), loading_hours(n, r) if r else 0.0) for r in (rates or no_rates)]
                 for k, (f, n, rates) in paths.items()}
    oc, raw, embed, train = projected.values()
    cached = [e + t for e, t in zip(embed, train)]
    a = ASSUMED
    rows = [f"| {k} | {f / 1e9:,.2f} | {compute_hours(f, n, 1.0):.2f} | {compute_hours(f, n):.2f} | "
            f"{loading_hours(n, med(r)):.2f} | **{med(projected[k]):.2f}** |" if r else
            f"| {k} | {f / 1e9:,.2f} | {compute_hours(f, n, 1.0):.2f} | {compute_hours(f, n):.2f} | none | "
            f"**{med(projected[k]):.2f}** |" for k, (f, n, r) in paths.items()]
    section = "\n".join([
        f"18 epochs of iNat2021 train ({TRAIN_IMAGES:,} images, {samples:,} samples) on {a['gpus']} V100 "
        "(2 nodes x 8), as `jobs/inat21-vitl14-*.yaml` runs it. No GPU was measured: these are projections, "
        "and the GPU figures stay open until a run on V100s replaces the assumed utilization with a measured one.",
        "",
        f"| path | GFLOP per sample | h at 100% of peak | h at {a['utilization']:.0%} | h of data loading | projected h |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        f"| **lit cached, total** | | | | | **{med(cached):.2f}** |",
        "",
        "Projected hours = max(compute at the assumed utilization, data loading): the two overlap.",
        "",
        "Assumptions and inputs:",
        f"- FLOPs counted with `torch.utils.flop_counter.FlopCounterMode` (matmuls and attention, 2 per multiply-add): "
        f"ViT-L-14 forward {f_img / 1e9:.1f} GFLOP per image (frozen: no backward); text tower (384 wide, 12 layers; "
        f"all-MiniLM-L12-v2, the jobs' tower, has the same matmul shapes) forward+backward {f_trim / 1e9:.2f} GFLOP per "
        f"caption at {length} tokens, {f_full / 1e9:.2f} at 77. Optimizer and elementwise work count zero.",
        f"- {length} tokens: the mean longest paper caption of a {a['per_gpu_batch']}-sample batch drawn uniformly over "
        f"{source} (mean caption {mean_len:.1f} tokens, open_clip tokenizer); lit trims each batch to its longest caption, "
        "open_clip_train pads every caption to 77.",
        f"- V100 SXM2 fp16 tensor-core peak {a['v100_fp16_tensor_tflops']:.0f} TFLOP/s per GPU, sustained at "
        f"{a['utilization']:.0%} of peak: an assumption (for scale, this machine's CPU text step reaches the share of "
        "its fp32 matmul peak that the `compute` benchmark reports).",
        f"- Data loading: {a['loader_cores_per_gpu']} loader cores per GPU (the jobs' cpus_per_task 5: assumed), each "
        f"decoding and transforming at one core's rate measured here with 500x375 JPEGs (iNat2021's size): "
        f"{med(runs['train']):.0f} images/s with the train transform (the raw paths: their loaders are assumed to reach "
        f"that rate on every core) and {med(runs['eval']):.0f} with the eval transform, of which `lit embed`'s pipeline "
        f"reaches the measured share {med(share):.2f} ({med(embed_rates):.0f} images/s per loader core). That share is "
        f"measured by {share_source['measured_by']}: `embed_folder` with a cheap tower (lit-tiny) and "
        f"{share_source['workers']} workers on this machine's CPU ({share_source['embed_images_s']:,.0f} images/s) against "
        f"{share_source['workers']} x one core's decode with that tower's preprocess "
        f"({share_source['decode_own_1core_images_s']:,.0f} images/s). Still assumed: that the share holds at "
        f"{a['loader_cores_per_gpu']} workers per GPU with a core of their own for the main process (here the workers share "
        "2 cores with it and with other users, so the share is a floor), and the tower's forward at the assumed "
        "utilization (the GPU figures of `bench/gpu_check.py` stay open: no GPU here). The cached path reads "
        "1.5 KB per sample (768 fp16) and decodes nothing.",
        "- Not included: evaluation passes, checkpoint writes, start-up, and communication (assumed overlapped: "
        "the text tower's gradients are 41M parameters per step).",
    ])
    return [
        {"metric": "JPEG decode + train transform, 500x375, 1 core", "unit": "images/s", "values": runs["train"],
         "params": {"assumed": ASSUMED, "images": n_images, "image_gflop": round(f_img / 1e9, 2),
                    "text_gflop": {str(length): round(f_trim / 1e9, 3), "77": round(f_full / 1e9, 3)},
                    "trimmed_length": round(batch_len, 2), "categories": source,
                    "external_load_cores": load, "lit_embed_share": share_source}},
        {"metric": "JPEG decode + eval transform, 500x375, 1 core", "unit": "images/s", "values": runs["eval"]},
        {"metric": "paper scale: open_clip_train", "unit": "h (projected)", "values": oc},
        {"metric": "paper scale: lit raw", "unit": "h (projected)", "values": raw},
        {"metric": "paper scale: lit cached (embed once + train)", "unit": "h (projected)", "values": cached},
        {"metric": "paper scale: open_clip_train / lit cached", "unit": "ratio", "values": common.ratios(oc, cached)},
        {"metric": "lit embed: share of its workers' one-core decode rate (measured, used above)", "unit": "ratio",
         "values": share, "note": f"from {share_source['measured_by']}"},
        {"section": "Paper scale, projected", "markdown": section},
    ]
