"""One labelled progress bar for the package's long one-off passes (evaluation, PUBG guidance answers, saliency
Fisher passes): ``tqdm.auto``, shown only on the main process and when the caller enables it (the trainers pass
``not args.disable_tqdm``)."""

from __future__ import annotations

import os


def _is_main_process() -> bool:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def progress_bar(iterable=None, *, desc: str, enabled: bool = True, **kwargs):
    """``tqdm.auto.tqdm(iterable, desc=desc, **kwargs)``, disabled unless ``enabled`` and on the main process."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=not (enabled and _is_main_process()), **kwargs)
