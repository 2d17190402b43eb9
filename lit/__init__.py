"""LiT-tune vision-language models for species identification.

A library (captions, shards, model, training, zero-shot evaluation, field use) plus thin CLIs.
Nothing here imports `launcher` or submitit. `from lit import Classifier` is the Python API
(lit.field.classifier); it is imported on first use, so `import lit` (and `lit --help`) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lit.field.classifier import Classifier

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Classifier":  # start-up cost, not a cycle: numpy, PIL and onnxruntime only when asked for
        from lit.field.classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'lit' has no attribute {name!r}")


__all__ = ["Classifier", "__version__"]
