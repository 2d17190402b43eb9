"""Worker of the resume-agreement tests: one gloo rank of `agree_on_checkpoint`, started by torch.multiprocessing.spawn.

`view` says how rank 1 sees the file rank 0 chose: "same", "unreadable" (its read fails, as a file still being
renamed or a stale NFS attribute cache would make it) or "other-step" (it reads another step).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def agree_rank(rank: int, world: int, port: int, run_dir: str, view: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch

    from lit import checkpoint, dist
    from lit.train.resume import agree_on_checkpoint

    torch.set_num_threads(1)
    if rank == 1 and view != "same":
        real_read = checkpoint.read

        def rank1_read(path, *args, **kwargs):  # type: ignore[no-untyped-def]
            if view == "unreadable":
                raise checkpoint.Unreadable("RuntimeError: PytorchStreamReader failed reading zip archive")
            return {**real_read(path, *args, **kwargs), "step": 3}

        checkpoint.read = rank1_read  # type: ignore[assignment]
    info = dist.resolve()
    dist.init(info, torch.device("cpu"), timeout_min=1)
    try:
        found = agree_on_checkpoint(run_dir, info)
        result = {"ok": True, "file": found[0].name if found else None, "step": found[1]["step"] if found else None}
    except Exception as err:  # what every rank raised is the result
        result = {"ok": False, "type": type(err).__name__, "error": str(err)}
    finally:
        dist.shutdown()
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
