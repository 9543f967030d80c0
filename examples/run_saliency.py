r"""Unlearn with MMUnlearner (weight saliency): gradient ascent on the forget VQA restricted to the parameter
entries whose forget saliency exceeds the preserved set's, plus the retain NLL (MMUnlearner Eq. 3-7).

    python examples/run_saliency.py                  # offline ToyWorld demo
    python examples/run_saliency.py --model_name_or_path llava-hf/llava-1.5-7b-hf --dataset my_forget_data \
        --forget_split forget --retain_split retain --preserve_splits text_forget,retain,text_retain \
        --use_peft false --learning_rate 2e-5 --per_device_train_batch_size 4 --num_train_epochs 2
    accelerate launch examples/run_saliency.py ...    # on GPUs; on CPU: torchrun --nproc_per_node 2 ... --use_cpu

The mask m = 1[S(T)/S(P) >= beta] is computed once, before training, from the forget rows (T) and the preserved
set P given by --preserve_splits (Eq. 6: text-only QA about the forget people, retain VQA, text-only QA about
retained people), then saved under output_dir/saliency and reusable with --saliency_mask.
Run with --help for every option (grouped: data, the method's, model, training); --config file.yaml reads them
from a YAML file (the command line wins).
"""

from dataclasses import dataclass, field

from unlearn_trainer import SaliencyConfig, SaliencyTrainer, cli
from unlearn_trainer.cli import ScriptArguments


@dataclass
class SaliencyArguments(ScriptArguments):
    """ScriptArguments plus the splits that form the preserved set P."""

    preserve_splits: str | None = field(
        default=None,
        metadata={"help": "Comma-separated splits of --dataset forming the preserved set P (Eq. 6); ToyWorld demo: "
                          "'text_forget,retain_train,text_retain'. Unset: the retain set (with a warning)."},
    )


def method_kwargs(script_args: SaliencyArguments, data, model, processor) -> dict:
    """``preserve_dataset=`` for SaliencyTrainer from ``--preserve_splits``."""
    if not script_args.preserve_splits:
        return {}
    names = [n.strip() for n in script_args.preserve_splits.split(",") if n.strip()]
    return {"preserve_dataset": [cli.data_split(script_args, data, n) for n in names]}


# ToyWorld defaults (used only when no --model_name_or_path is given): beta=1, P = text-only QA about the forget
# people + retain VQA + text-only retain QA (Eq. 6), full-parameter training as in the paper, retain NLL, lr 3e-4 x
# 40 steps of batch 8, forget ceiling 1 nat. How they were chosen: benchmarks/README.md, "Method notes", Saliency.
DEMO_DEFAULTS = dict(learning_rate=3e-4, max_steps=40, per_device_train_batch_size=8, use_peft=False,
                     forget_loss_ceiling=1.0, preserve_splits="text_forget,retain_train,text_retain",
                     lr_scheduler_type="constant", seed=0)


def main(argv=None):
    """Run the example (``argv``: command-line arguments, default ``sys.argv[1:]``); returns the trainer."""
    script_args, config, model_args = cli.parse_args(SaliencyConfig, DEMO_DEFAULTS, argv,
                                                     script_args_cls=SaliencyArguments, description=__doc__)
    model, processor, is_demo = cli.load_model_and_processor(model_args, script_args)
    data = cli.load_data(script_args)
    peft_config = cli.lora_config(model_args, model)
    unlearning_eval = cli.unlearning_eval_callback(script_args, config, processor, data)
    method_inputs = method_kwargs(script_args, data, model, processor)
    trainer = SaliencyTrainer(
        model=model,
        args=config,
        forget_dataset=data.forget,
        retain_dataset=data.retain,
        processing_class=processor,
        peft_config=peft_config,
        ref_model=cli.reference_model(model_args, script_args, SaliencyTrainer, config, peft_config),
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
