r"""Evaluate a saved model or adapter without training: the same splits and metrics as the training callback, and
the robustness probes (proof of forgetting).

    python -m unlearn_trainer.evaluate --adapter outputs/npo-toyworld-forget10 --output_dir eval/npo
        # the ToyWorld demo model (no --model) with an unlearned adapter, the cheap probes
    python -m unlearn_trainer.evaluate --adapter outputs/npo-toyworld-forget10 --probes all --build_retrained true \
        --output_dir eval/npo-all      # + forget quality, PrivLeak, relearning and quantization attacks
    python -m unlearn_trainer.evaluate --model path/to/unlearned-or-base --adapter path/to/adapter \
        --dataset my_data --forget_split forget --retain_split retain --retrained_model path/to/retrained \
        --output_dir eval/mine

Writes to ``--output_dir``: ``evaluation.json`` (metrics and generated answers: keep it local, it can name the
forgotten), ``evaluation.md``, ``evaluation.png``, ``robustness.json`` and ``robustness.md`` (numbers only).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from .cli import ScriptArguments

__all__ = ["EvaluateArguments", "evaluate_saved", "main"]


@dataclass
class EvaluateArguments(ScriptArguments):
    """What to evaluate (the data options are the examples')."""

    model: str | None = field(default=None, metadata={"help": "Saved model folder or Hub id (the unlearned model, or "
                                                               "the base of --adapter); unset: the ToyWorld demo."})
    adapter: str | None = field(default=None, metadata={"help": "A PEFT adapter folder to put on --model (an "
                                                                "example's output_dir)."})
    output_dir: str = field(default="evaluation", metadata={"help": "Where evaluation.* and robustness.* go."})
    batch_size: int = field(default=32, metadata={"help": "Rows per forward / generation batch."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bars."})
    evaluate_retrained: bool = field(default=False, metadata={"help": "Evaluate the retrained model itself (the "
                                                                       "reference: --retrained_model, or ToyWorld's "
                                                                       "for the split) instead of --model."})


def _parser():
    from trl import TrlParser

    from .cli import _HelpFormatter

    return TrlParser((EvaluateArguments,), formatter_class=_HelpFormatter, description=__doc__,
                     usage="python -m unlearn_trainer.evaluate [--config FILE.yaml] [--option VALUE ...]")


def evaluate_saved(args: EvaluateArguments, model=None, processor=None) -> dict:
    """Evaluate ``args.model`` (+ ``args.adapter``), or the given ``model`` / ``processor``, on ``args``'s data;
    write the outputs and return ``{"evaluation": {split: metrics}, "robustness": results, "paths": ...}``."""
    from .cli import load_data, load_saved_model, parse_steps, probe_data, retrained_model
    from .evaluation import UnlearningEvalCallback, score_predictions
    from .evaluation.robustness import parse_probes

    probes = parse_probes(args.probes)
    steps = parse_steps(args.relearn_steps)
    data = load_data(args)
    progress = not args.disable_tqdm
    retrained = retrained_model(args, data, ("forget_quality",) if args.evaluate_retrained else probes, progress)
    if args.evaluate_retrained:
        if retrained is None:
            raise FileNotFoundError("--evaluate_retrained true: no retrained model. Pass --retrained_model PATH, or "
                                    "for ToyWorld --build_retrained true.")
        model, processor = retrained
    elif model is None:
        model, processor = load_saved_model(args.model, args.adapter, args)
    callback = UnlearningEvalCallback(
        processor, data.eval_splits, output_dir=args.output_dir, is_well_formed=data.is_well_formed,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        row_metrics=score_predictions if data.scoring else None, probes=probes,
        probe_data=probe_data(args, data) if probes else None, retrained=retrained,
        probe_kwargs={"relearn_steps": steps})
    metrics = callback.evaluate(model, "evaluated", 0, progress=progress)
    robustness = callback.probe(model, "evaluated", progress=progress)
    paths = callback.write(args.output_dir, name="evaluation")
    return {"evaluation": metrics, "robustness": robustness, "paths": paths, "table": callback.table(),
            "robustness_table": callback.robustness_table()}


def main(argv=None) -> dict:
    """``python -m unlearn_trainer.evaluate``: parse, load, evaluate, write, print the tables."""
    argv = list(sys.argv[1:] if argv is None else argv)
    (args,) = _parser().parse_args_and_config(args=argv)[:1]
    result = evaluate_saved(args)
    print(result["table"])
    if result["robustness_table"]:
        print(f"\nRobustness:\n{result['robustness_table']}")
    print(f"\nwritten to {os.path.abspath(args.output_dir)}/: {', '.join(sorted(os.path.basename(p) for p in result['paths'].values()))}")
    return result


if __name__ == "__main__":
    main()
