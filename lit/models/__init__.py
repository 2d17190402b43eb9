"""Pretrained towers for a job: `lit models prepare` writes them on a login node, `model_checks` verifies them.

`lit.models.prepare` downloads through open_clip's and huggingface_hub's own functions
(`lit.models.fetch`; timm towers through timm's, `lit.models.timm_tower`) and checks the result
against the job's model (`lit.models.checks`); `lit.models.verify` holds the sha256 sums and the
doctor checks (no torch import). See docs/models.md.
"""
