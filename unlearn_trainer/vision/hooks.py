"""Forward hooks as context managers: registered on entry, removed on exit, also when the body raises.

Every hook this package places on a model goes through :func:`module_hook`, so none outlives its ``with`` block.
:func:`capture` reads a module's input or output during a forward pass and can stop the pass right there
(:class:`StopForward`), which is how the adapters read vision features without running the language model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["StopForward", "Captured", "module_hook", "capture", "run_until_captured", "count_hooks"]


class StopForward(Exception):
    """Raised by a capturing hook to end a forward pass once the wanted tensor is read."""


class Captured:
    """What a :func:`capture` hook saw: ``value`` (None until the module ran) and ``calls`` (how many times)."""

    def __init__(self) -> None:
        self.value: Any = None
        self.calls = 0


@contextlib.contextmanager
def module_hook(
    module: torch.nn.Module, fn: Callable, *, pre: bool = False, with_kwargs: bool = False
) -> Iterator[torch.utils.hooks.RemovableHandle]:
    """Register ``fn`` as a forward (``pre=False``) or forward-pre hook of ``module`` for the ``with`` block.

    ``fn`` has PyTorch's hook signature: ``fn(module, args[, kwargs])`` for a pre-hook, ``fn(module, args[, kwargs],
    output)`` for a forward hook. The handle is removed on exit, whether the block returns or raises.
    """
    if pre:
        handle = module.register_forward_pre_hook(fn, with_kwargs=with_kwargs)
    else:
        handle = module.register_forward_hook(fn, with_kwargs=with_kwargs)
    try:
        yield handle
    finally:
        handle.remove()


@contextlib.contextmanager
def capture(
    module: torch.nn.Module, what: str = "output", *, stop: bool = False, kwarg: str | None = None
) -> Iterator[Captured]:
    """Record ``module``'s first positional input (``what="input"``), a keyword input (``what="input"`` with
    ``kwarg="name"``) or its output (``what="output"``) during forward passes in the block.

    With ``stop=True`` the hook raises :class:`StopForward` once it has recorded, ending the forward pass early;
    call the model through :func:`run_until_captured` (or catch :class:`StopForward` yourself).
    """
    if what not in ("input", "output"):
        raise ValueError(f"capture(what=...) must be 'input' or 'output', got {what!r}")
    box = Captured()

    def record(value):
        box.value = value
        box.calls += 1
        if stop:
            raise StopForward

    if what == "output":
        hook = module_hook(module, lambda m, args, out: record(out))
    else:

        def pre_hook(m, args, kwargs):
            if kwarg is not None:
                if kwargs.get(kwarg) is None:
                    raise RuntimeError(f"capture: {type(m).__name__} was called without the keyword input {kwarg!r}.")
                record(kwargs[kwarg])
            elif args:
                record(args[0])
            else:
                raise RuntimeError(f"capture: {type(m).__name__} was called without positional inputs.")

        hook = module_hook(module, pre_hook, pre=True, with_kwargs=True)
    with hook:
        yield box


def run_until_captured(call: Callable[[], Any], module: torch.nn.Module, what: str = "output", kwarg: str | None = None):
    """Run ``call()`` (a forward pass) until ``module`` is reached and return its captured input or output.

    Raises ``RuntimeError`` if the pass finished without running ``module`` (e.g. no ``pixel_values`` given).
    """
    with capture(module, what, stop=True, kwarg=kwarg) as box:
        try:
            call()
        except StopForward:
            pass
    if box.calls == 0:
        raise RuntimeError(
            f"The forward pass never reached {type(module).__name__}; does the batch contain the inputs it needs "
            f"(e.g. pixel_values)?"
        )
    return box.value


def count_hooks(model: torch.nn.Module) -> int:
    """Number of forward and forward-pre hooks on ``model`` and all its submodules (to check for leaks)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
