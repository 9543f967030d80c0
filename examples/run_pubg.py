r"""Unlearn with PUBG (Post-Unlearning Behavior Guidance): gradient ascent on the private answers plus fine-tuning
toward o*, what the frozen model answers when an in-context prompt asks it to describe only what is visible
(PUBG Eq. 3), plus the retain NLL (Eq. 12).

    python examples/run_pubg.py                      # offline ToyWorld demo (o*: the world's picture descriptions)
    python examples/run_pubg.py --model_name_or_path llava-hf/llava-v1.6-mistral-7b-hf --dataset my_forget_data \
        --forget_split forget --retain_split retain --lora_r 128 --lora_alpha 256 --learning_rate 2e-5 \
        --per_device_train_batch_size 8 --max_steps 30 --guidance_cache_dir pubg_cache
    accelerate launch examples/run_pubg.py ...        # on GPUs; on CPU: torchrun --nproc_per_node 2 ... --use_cpu

o* is generated once at start by the reference model (--query, --incontext_prompt; cached with
--guidance_cache_dir), or read from --guidance_answers (a JSON list of strings, a JSON/JSONL file of rows
with an 'answer', or a split of --dataset), one per forget row in the forget set's order.
Run with --help for every option (grouped: data, the method's, model, training); --config file.yaml reads them
from a YAML file (the command line wins).
"""

import json
import os
from dataclasses import dataclass, field

from unlearn_trainer import PUBGConfig, PUBGTrainer, cli
from unlearn_trainer.cli import ScriptArguments


@dataclass
class PUBGArguments(ScriptArguments):
    """ScriptArguments plus where PUBG's guidance answers o* come from."""

    guidance_answers: str | None = field(
        default=None,
        metadata={"help": "o*, one per forget row in order: a .json (list of strings or rows) / .jsonl file of rows "
                          "with 'answer', or a split of --dataset; unset: generated at start (paper)."},
    )


def _read_answers(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        return json.load(f)


def method_kwargs(script_args: PUBGArguments, data, model, processor) -> dict:
    """``guidance_answers=`` for PUBGTrainer when given; otherwise the trainer generates them."""
    source = script_args.guidance_answers
    if source is None:
        return {}
    if source.endswith((".json", ".jsonl")) and os.path.isfile(source):
        answers = _read_answers(source)
    else:
        split = cli.data_split(script_args, data, source)
        answers = [dict(split[i]) for i in range(len(split))]
    return {"guidance_answers": answers}


# ToyWorld defaults (used only when no --model_name_or_path is given): q and c in the world's own grammar, o*
# greedy from c alone (prompt_position "instead": the world model was never trained on [q, c] and, given it, mixes
# the person's job and city into the description of 7 of the 16 forget pictures), guidance weight 1 and retain NLL
# (Eq. 3 / 12), LoRA r=8, lr 1e-3 x 60 steps of batch 8, forget ceiling 1 nat. How they were chosen:
# benchmarks/README.md, "Method notes", PUBG.
DEMO_DEFAULTS = dict(learning_rate=1e-3, max_steps=60, per_device_train_batch_size=8, forget_loss_ceiling=1.0,
                     query="tell me about this person .", incontext_prompt="describe the picture .",
                     prompt_position="instead", guidance_do_sample=False, guidance_max_new_tokens=32,
                     lr_scheduler_type="constant", seed=0)


def main(argv=None):
    """Run the example (``argv``: command-line arguments, default ``sys.argv[1:]``); returns the trainer."""
    script_args, config, model_args = cli.parse_args(PUBGConfig, DEMO_DEFAULTS, argv, script_args_cls=PUBGArguments,
                                                     description=__doc__)
    model, processor, is_demo = cli.load_model_and_processor(model_args, script_args)
    data = cli.load_data(script_args)
    peft_config = cli.lora_config(model_args, model)
    unlearning_eval = cli.unlearning_eval_callback(script_args, config, processor, data)
    method_inputs = method_kwargs(script_args, data, model, processor)
    trainer = PUBGTrainer(
        model=model,
        args=config,
        forget_dataset=data.forget,
        retain_dataset=data.retain,
        processing_class=processor,
        peft_config=peft_config,
        ref_model=cli.reference_model(model_args, script_args, PUBGTrainer, config, peft_config),
        callbacks=[unlearning_eval],
        model_card_kwargs=cli.model_card_kwargs(script_args),
        **method_inputs,
    )
    trainer.train(resume_from_checkpoint=cli.checkpoint_to_resume(config))
    trainer.save_model(config.output_dir)
    cli.report(trainer, unlearning_eval, script_args, is_demo)
    return trainer


if __name__ == "__main__":
    main()
