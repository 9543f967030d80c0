"""IdkNLL: fine-tune the forget questions toward a refusal ("I don't know"), TOFU's "IDK" baseline.

TOFU (Maini et al. 2024, Sec. 5, "Preference Optimization") replaces each forget answer by one of a pool of
"I don't know"-like answers and minimises the NLL of that refusal, plus the retain NLL (the GradDiff pairing):

    L = mean_{D_f} NLL(refusal(x) | I, x)   + retain_weight * NLL on D_r

Our reading. The refusal of forget row i is drawn from ``refusals`` by a hash of (``refusal_seed``, i), the same at
every epoch (TOFU draws one at random per row); the default pool (``data.refusals.DEFAULT_REFUSALS``) is ours in
TOFU's style, cut to the refusals the tokenizer represents. The refusal rows keep the forget row's question, images
and prompt turns (built by ``data.refusals.RefusalCollator``); the per-sample NLL is the mean over the refusal's
tokens, as the retain NLL. The refusal pass is the pass that unlearns (a saliency mask gates it). The forget answers
themselves are never scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import losses
from ..citation import Citation
from ..data.refusals import build_refusal_collator, check_refusal_pool
from .base import UnlearnConfig, UnlearnTrainer

__all__ = ["IdkNLLConfig", "IdkNLLTrainer", "RefusalConfig"]

REFUSALS_HELP = ("Pool of refusal answers (one is chosen per forget row by a hash of refusal_seed and the row's "
                 "position); unset: the package's 'I don't know'-style pool, less what the tokenizer cannot write.")


@dataclass
class RefusalConfig(UnlearnConfig):
    """The refusal pool of the IDK methods (IdkNLL, IdkDPO): ``refusals`` (checked by
    :func:`~unlearn_trainer.data.refusals.check_refusal_pool`) and ``refusal_seed``; a trainer with this config builds
    its refusal rows with :func:`~unlearn_trainer.data.refusals.build_refusal_collator`."""

    refusals: list[str] | None = field(default=None, metadata={"help": REFUSALS_HELP})
    refusal_seed: int = field(default=0, metadata={"help": "Seed of the per-row refusal choice."})

    def __post_init__(self):
        super().__post_init__()
        if self.refusals is not None:
            self.refusals = check_refusal_pool(self.refusals)


@dataclass
class IdkNLLConfig(RefusalConfig):
    """IdkNLL (TOFU's IDK): NLL of a refusal on each forget question + the retain NLL (``paper_settings``: TOFU's
    objective; its training hyperparameters are its own)."""

    paper_settings: ClassVar[dict[str, Any]] = {"retain_loss": "nll"}
    paper_retain_term: ClassVar[str] = "TOFU's retain NLL"


class IdkNLLTrainer(UnlearnTrainer):
    """IdkNLL trainer; the refusal pool is ``args.refusals``."""

    config_class = IdkNLLConfig
    method_name = "idk_nll"
    citation = Citation(
        "IdkNLL (IDK fine-tuning)",
        "TOFU: A Task of Fictitious Unlearning for LLMs",
        "Pratyush Maini, Zhili Feng, Avi Schwarzschild, Zachary C. Lipton, J. Zico Kolter",
        "2024, arXiv:2401.06121",
        "https://arxiv.org/abs/2401.06121",
        "fine-tuning the forget questions toward a refusal (\"I don't know\") in place of their answers, with the "
        "retain NLL.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_collator = build_refusal_collator(self.data_collator, self.args.refusals, self.args.refusal_seed,
                                                    self.processing_class)

    def unlearning_loss(self, model, inputs):
        refusal = refusal_batch(inputs)
        nll = losses.nll_loss(self.forget_logits(model, refusal), refusal["labels"])
        return nll, {"refusal_nll": nll}


def refusal_batch(inputs: dict) -> dict:
    """The batch's refusal rows, or an error saying which collator builds them."""
    if inputs.get("refusal") is None:
        raise ValueError("IDK batches need 'refusal' (the forget rows with a refusal as answer): use "
                         "unlearn_trainer.data.refusals.RefusalCollator (the IDK trainers install it).")
    return inputs["refusal"]
