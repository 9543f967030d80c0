"""PUBG: Post-Unlearning Behavior Guidance (gradient ascent on the private answers + SFT toward o*).

The paper. Suppression alone leaves "unlearning aftermaths": GA and NPO degenerate ("known known known", empty
strings), random-label tuning hallucinates, rejection tuning refuses everything. PUBG also says what the model
should answer instead. The target behaviour is the reference distribution p_theta*(o | I, q) of the original
model given an in-context prompt c (Fig. 2: describe only what is visible, no name, profession or birthdate).
Minimising KL(p_theta* || p_theta) (Eq. 1) equals minimising the cross-entropy on samples o* ~ p_theta*(o | I,
[q, c]) (Eq. 2, Appendix B.1), so, with GA on the private answers r of the forget set (Eq. 11):

    L_PUBG = E[ log p_theta(r | I, q) - log p_theta(o* | I, q) ]      (Eq. 3; minibatch form Eq. 10)

o* is trained without c in the input. The paper adds the usual retain NLL (Eq. 12) for PUBG and all baselines.

Our defaults and where they come from. ``query`` = "Tell me the specific information of this person."
(Appendix A, Table 2); ``incontext_prompt`` = Fig. 2; ``prompt_position="after"`` because Algorithm 1 writes the
generation input as [q, c]. o* are generated once before training ("we use in-context unlearning solely for
creating the training dataset"), one per forget row, by sampling (Algorithm 1: "Sample o*"), seeded so runs
repeat; ``guidance_do_sample=False`` gives greedy answers. The paper gives no sampling temperature or length:
we use the model's generation config and ``guidance_max_new_tokens=128``. ``guidance_weight=1.0`` (Eq. 3 adds the
two terms unweighted). Token reduction: Eq. 3 writes sequence log-probabilities; ``token_reduction="mean"``
(default) uses each sample's mean token NLL, as GATrainer and usual implementations do; "sum" is the literal
Eq. 3. ``forget_loss_ceiling`` is our guard on GA, not in the paper (off by default). Training setup of the paper
(the config's defaults; LoRA is the model's choice): LoRA r=128, alpha=256, AdamW, batch 8, 30 steps, lr 2e-5
(LLaVA-1.6-Mistral) / 3e-5 (LLaVA-1.6-Vicuna), retain NLL on the retain entities.
Logged terms: ``forget_nll`` (mean token NLL of r), ``guidance_nll`` (mean token NLL of o*), ``ga_loss`` and
``guidance_loss`` (the two terms as they enter the loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from accelerate.utils import is_peft_model

from .. import losses
from ..citation import Citation
from ..data.collator import row_id_digest, row_images, row_name
from ..data.pubg import (
    CONCEPT_POLICIES,
    DEFAULT_INCONTEXT_PROMPT,
    DEFAULT_QUERY,
    PROMPT_POSITIONS,
    PUBGCollator,
    PUBGDataset,
    build_guidance_rows,
    drop_answers_naming_concepts,
    generate_guidance_answers,
)
from .base import PerFamily, UnlearnConfig, UnlearnTrainer, paper_field

__all__ = ["PUBGConfig", "PUBGTrainer"]


#: PUBG's settings: Eq. 3 unweighted, q of App. A Table 2, c of Fig. 2 after q, o* sampled (Algorithm 1), the
#: retain NLL of Eq. 12; no guard on GA; LoRA r=128, alpha=256, AdamW, batch 8, 30 steps, lr by language model
#: (Table 6): 2e-5 for LLaVA-1.6-Mistral, 3e-5 for LLaVA-1.6-Vicuna (a Llama language model).
PAPER_SETTINGS: dict[str, Any] = {
    "guidance_weight": 1.0, "query": DEFAULT_QUERY, "incontext_prompt": DEFAULT_INCONTEXT_PROMPT,
    "prompt_position": "after", "guidance_do_sample": True, "forget_loss_ceiling": None,
    "learning_rate": PerFamily({"mistral": 2e-5, "llama": 3e-5}), "per_device_train_batch_size": 8, "max_steps": 30,
    "retain_loss": "nll", "adapter": "lora", "lora_r": 128, "lora_alpha": 256,
}


@dataclass
class PUBGConfig(UnlearnConfig):
    """PUBG (Eq. 3): GA on the forget answers + ``guidance_weight`` * NLL of the guidance answers o*. Defaults are
    the paper's (``PAPER_SETTINGS``): batch 8, 30 steps, learning rate None = the paper's for the language model
    (2e-5 Mistral, 3e-5 Vicuna/Llama; set when the trainer is built); LoRA r=128, alpha=256 is the model's choice."""

    paper_settings: ClassVar[dict[str, Any]] = PAPER_SETTINGS
    paper_retain_term: ClassVar[str] = "the retain NLL of Eq. 12"

    guidance_weight: float = paper_field(
        PAPER_SETTINGS, "guidance_weight", "Weight of the behaviour-guidance NLL on o* (Eq. 3: 1)."
    )
    query: str | None = paper_field(
        PAPER_SETTINGS, "query",
        "Query q of the guidance rows (and of generation); None: each forget row's own question.",
    )
    incontext_prompt: str = paper_field(
        PAPER_SETTINGS, "incontext_prompt", "In-context prompt c for generating o* (paper Fig. 2)."
    )
    prompt_position: str = paper_field(
        PAPER_SETTINGS, "prompt_position",
        "c after the query ([q, c], Algorithm 1), 'before' it, or 'instead' of it (c alone at generation, not the "
        "paper's: for a model never trained to follow c after a query, e.g. ToyWorld's).",
    )
    guidance_max_new_tokens: int = field(default=128, metadata={"help": "Length limit of each generated o*."})
    guidance_do_sample: bool = paper_field(
        PAPER_SETTINGS, "guidance_do_sample", "Sample o* (Algorithm 1), seeded by guidance_seed; False: greedy."
    )
    guidance_seed: int = field(default=0, metadata={"help": "Seed of the o* sampling."})
    guidance_batch_size: int = field(default=8, metadata={"help": "Batch size of the o* generation."})
    guidance_cache_dir: str | None = field(
        default=None, metadata={"help": "Directory to cache generated o* as JSON (reloaded when the fingerprint matches)."}
    )
    token_reduction: str = field(
        default="mean", metadata={"help": "Per-sample 'mean' token NLL, or 'sum' (sequence log-probs, Eq. 3)."}
    )
    concept_key: str = field(
        default="concepts",
        metadata={"help": "Forget-row field naming the concept (a string or aliases); an o* that names it would "
                          "cancel the GA term."},
    )
    guidance_concept_retries: int = field(
        default=2, metadata={"help": "Regenerations, with other seeds, of an o* that names its row's concept."}
    )
    guidance_concept_policy: str = field(
        default="drop",
        metadata={"help": "An o* that still names the concept (or a given one that does): 'drop' that row's guidance "
                          "pass, or 'error'."},
    )
    forget_loss_ceiling: float | None = paper_field(
        PAPER_SETTINGS, "forget_loss_ceiling",
        "Mean token NLL (nats) of a forget answer above which it stops being pushed (a guard the paper does not "
        "have); None (default, the paper) disables."
    )
    learning_rate: float | None = paper_field(
        PAPER_SETTINGS, "learning_rate",
        "Paper: 2e-5 (LLaVA-1.6-Mistral), 3e-5 (LLaVA-1.6-Vicuna); None (default): the paper's value for the "
        "model's language model (Mistral's when the paper gives none), set at trainer build."
    )
    per_device_train_batch_size: int = paper_field(
        PAPER_SETTINGS, "per_device_train_batch_size", "Paper: batch size 8."
    )
    max_steps: int = paper_field(
        PAPER_SETTINGS, "max_steps", "Paper: 30 steps (overrides num_train_epochs; -1 to train by epochs)."
    )

    def __post_init__(self):
        super().__post_init__()
        if self.guidance_weight < 0:
            raise ValueError(f"guidance_weight must be >= 0, got {self.guidance_weight}.")
        if self.prompt_position not in PROMPT_POSITIONS:
            raise ValueError(f"prompt_position must be one of {PROMPT_POSITIONS}, got {self.prompt_position!r}.")
        if self.guidance_concept_policy not in CONCEPT_POLICIES:
            raise ValueError(f"guidance_concept_policy must be one of {CONCEPT_POLICIES}, got "
                             f"{self.guidance_concept_policy!r}.")
        if self.guidance_concept_retries < 0:
            raise ValueError(f"guidance_concept_retries must be >= 0, got {self.guidance_concept_retries}.")
        if self.token_reduction not in ("mean", "sum"):
            raise ValueError(f"token_reduction must be 'mean' or 'sum', got {self.token_reduction!r}.")


class PUBGTrainer(UnlearnTrainer):
    """PUBG trainer. ``guidance_answers=``: the o* rows (or strings), one per forget row in order; if omitted
    they are generated at init by the reference model (the adapter-disabled PEFT model, or the unmodified
    model / ``ref_model=``) with the in-context prompt, on the main process, and cached if configured."""

    config_class = PUBGConfig
    method_name = "pubg"
    citation = Citation(
        "PUBG (Post-Unlearning Behavior Guidance)",
        "Rethinking Post-Unlearning Behavior of Large Vision-Language Models",
        "Anonymous",
        "anonymous ACL submission, year not stated in the paper text",
        None,
        "gradient ascent on the private answers plus fine-tuning toward "
        "privacy-preserving, visually grounded descriptions generated by the original model with an in-context prompt.",
    )

    def __init__(self, model=None, args: PUBGConfig | None = None, data_collator=None, train_dataset=None,
                 eval_dataset=None, processing_class=None, forget_dataset=None, retain_dataset=None, ref_model=None,
                 peft_config=None, guidance_answers=None, **kwargs):
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, forget_dataset=forget_dataset,
                         retain_dataset=retain_dataset, ref_model=ref_model, peft_config=peft_config, **kwargs)
        forget_rows = [dict(self.forget_dataset[i]) for i in range(len(self.forget_dataset))]
        if guidance_answers is None:
            guidance = self._generate_guidance(forget_rows, ref_model)
        else:
            guidance = self._pair_guidance(forget_rows, guidance_answers)
        self.guidance_answers = guidance
        self.train_dataset = PUBGDataset(self.train_dataset, guidance)
        collator = self.data_collator
        self.data_collator = PUBGCollator(collator.forget_collator, collator.retain_collator)

    # -- guidance answers ----------------------------------------------------------------------------------------
    def _pair_guidance(self, forget_rows: list[dict], guidance) -> list[dict]:
        guidance = list(guidance)
        if all(isinstance(r, str) for r in guidance):
            if len(guidance) == len(forget_rows):
                guidance = self._without_concepts(forget_rows, guidance)
            return build_guidance_rows(forget_rows, guidance, self.args.query)
        if len(guidance) != len(forget_rows):
            raise ValueError(f"{len(guidance)} guidance answers for {len(forget_rows)} forget rows; give one per "
                             f"forget row, in the forget set's order.")
        for i, (f, r) in enumerate(zip(forget_rows, guidance)):
            if not isinstance(r, dict) or not isinstance(r.get("answer"), str) or not r["answer"].strip():
                raise ValueError(f"Guidance answer #{i} (for forget {row_name(f, i)}) must be a row with a non-empty "
                                 f"'answer' (o*) or a string.")
            if f.get("id") is not None and r.get("id") is not None and f["id"] != r["id"]:
                raise ValueError(f"Guidance answer #{i} has id digest {row_id_digest(r['id'])} but forget "
                                 f"{row_name(f, i)} is at that position: give the guidance rows in the forget set's "
                                 f"order.")
        rows = [dict(r) for r in guidance]
        for f, r in zip(forget_rows, rows):  # o* is trained on the forget image: take it from the forget row
            if not row_images(r):
                r.update({k: f[k] for k in ("image", "images") if k in f})
        kept = self._without_concepts(forget_rows, [r["answer"] for r in rows])
        return [r if answer is not None else None for r, answer in zip(rows, kept)]

    def _without_concepts(self, forget_rows: list[dict], answers: list) -> list:
        """Given o* that name their row's concept: dropped (None) or an error, by ``guidance_concept_policy``."""
        return drop_answers_naming_concepts(forget_rows, answers, self.args.concept_key,
                                            self.args.guidance_concept_policy, "given guidance answer")

    def _generate_guidance(self, forget_rows: list[dict], ref_model) -> list[dict]:
        if self.processing_class is None:
            raise ValueError("PUBG generates its guidance answers with the processor: pass processing_class=, or "
                             "pass guidance_answers=.")
        model = self.accelerator.unwrap_model(self.model)
        if ref_model is not None and not is_peft_model(model):
            model = ref_model
        a = self.args
        answers = None
        if self.accelerator.is_main_process:
            rows = generate_guidance_answers(
                model, self.processing_class, forget_rows, prompt=a.incontext_prompt, query=a.query,
                max_new_tokens=a.guidance_max_new_tokens, seed=a.guidance_seed, batch_size=a.guidance_batch_size,
                do_sample=a.guidance_do_sample, prompt_position=a.prompt_position,
                cache_dir=a.guidance_cache_dir, progress=not a.disable_tqdm, concept_key=a.concept_key,
                concept_retries=a.guidance_concept_retries, concept_policy=a.guidance_concept_policy,
            )
            answers = [None if r is None else r["answer"] for r in rows]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            answers = broadcast_object_list([answers])[0]
        return build_guidance_rows(forget_rows, answers, a.query)

    # -- the objective -------------------------------------------------------------------------------------------
    def _per_sample_nll(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample loss in the configured reduction, per-sample mean token NLL)."""
        logps, mask = losses.token_logprobs(logits, labels)
        mean_nll = -losses.masked_mean_per_sample(logps, mask)
        return (mean_nll if self.args.token_reduction == "mean" else -logps.sum(-1)), mean_nll

    def unlearning_passes(self, model, inputs):
        """Two trainable passes: GA on the forget answer, then NLL on the guidance answer o* (backpropagated one
        after the other in training); only the first when every o* of the batch was dropped."""
        if "guidance" not in inputs:
            raise ValueError("PUBG batches need 'guidance' (the o* rows): use PUBGDataset / PUBGCollator.")
        guidance = inputs["guidance"]
        passes = [lambda: self._forget_pass(model, inputs["forget"])]
        if guidance is not None:  # None: every o* of this batch was dropped, it named the forgotten concept
            passes.append(lambda: self._guidance_pass(model, guidance))
        return passes

    def _forget_pass(self, model, forget: dict):
        forget_loss, forget_nll = self._per_sample_nll(self.forget_logits(model, forget), forget["labels"])
        ga = losses.ga_loss(forget_loss, self.args.forget_loss_ceiling, mean_token_nll=forget_nll)
        return ga, {"forget_nll": forget_nll.mean(), "ga_loss": ga}

    def _guidance_pass(self, model, guidance: dict):
        # the guidance pass is not the forget pass: gradient gating of the forget objective does not apply to it
        guidance_loss, guidance_nll = self._per_sample_nll(self.forward_logits(model, guidance), guidance["labels"])
        bg = guidance_loss.mean()
        return self.args.guidance_weight * bg, {"guidance_nll": guidance_nll.mean(), "guidance_loss": bg}
