"""`python _openclip_entry.py MODEL.json ARGS...`: open_clip_train.main with one extra model config.

open_clip_train takes models by name only; this registers MODEL.json (its stem is the name)
with open_clip and hands ARGS to open_clip_train unchanged. Run by bench/out/venv-openclip.
"""

from __future__ import annotations

import sys

import open_clip
from open_clip_train.main import main

if __name__ == "__main__":
    open_clip.add_model_config(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
