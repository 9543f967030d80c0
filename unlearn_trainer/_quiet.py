"""Keep two upstream start-up messages out of every run; imported first by ``unlearn_trainer/__init__.py``.

Neither comes from a backend this package uses on that path:

- ``import peft`` imports bitsandbytes whenever it is installed (``peft.helpers``; transformers' ``Trainer`` imports
  peft), and bitsandbytes logs "Failed to load CPU gemm_4bit_forward from kernels-community ..." at import on a
  CPU without the optional ``kernels`` package (logger ``bitsandbytes.backends.cpu.ops``).
- transformers' ``Trainer.__init__`` unwraps the model with ``accelerate.utils.extract_model_from_parallel``, which
  imports DeepSpeed whenever it is installed, and DeepSpeed logs "Setting accelerator to CPU ..." to stdout on a
  machine without a GPU (logger ``DeepSpeed``).

Each is dropped by a filter on that one logger that matches that one message (the DeepSpeed one only while torch
sees no CUDA device, where it is expected); every other record of those loggers passes. A process that imported
peft before this package has already printed the first one.

Likewise ``PeftModel.__init__`` reads transformers' deprecated ``is_gradient_checkpointing`` property, a
``FutureWarning`` on every LoRA run (peft's to fix, not the user's): that one warning is ignored.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str, when: Callable[[], bool] | None = None):
        super().__init__()
        self.prefix, self.when = prefix, when

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        return self.when is not None and not self.when()


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


_FILTERS = {
    "bitsandbytes.backends.cpu.ops": _DropMessage("Failed to load CPU gemm_4bit_forward from kernels-community"),
    "DeepSpeed": _DropMessage("Setting accelerator to CPU.", when=_no_cuda),
}

for _name, _filter in _FILTERS.items():
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _DropMessage) for f in _logger.filters):
        _logger.addFilter(_filter)

warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning,
                        module=r"transformers\.modeling_utils")
