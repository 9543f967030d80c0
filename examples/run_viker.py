r"""Unlearn with ViKeR (Visual-Guided Key-Token Regularization): gradient ascent on the forget answers,
regularized token by token toward what the frozen model predicts when the forget image is replaced by k images
of other people (ViKeR Eq. 4-5).

    python examples/run_viker.py                     # offline ToyWorld demo (reference images: 'distant' people)
    python examples/run_viker.py --model_name_or_path llava-hf/llava-1.5-7b-hf --dataset my_forget_data \
        --forget_split forget --retain_split none --reference_images_split other_people --lam 0.05 \
        --learning_rate 5e-6 --per_device_train_batch_size 2 --num_train_epochs 1
    accelerate launch examples/run_viker.py ...       # on GPUs; on CPU: torchrun --nproc_per_node 2 ... --use_cpu

The reference images I' come from a split of --dataset (--reference_images_split; only its image column is read):
pictures of people who are neither forgotten nor retained (the paper uses celebrities from another dataset).
Run with --help for every option (grouped: data, the method's, model, training); --config file.yaml reads them
from a YAML file (the command line wins).
"""

from dataclasses import dataclass, field

from unlearn_trainer import ViKeRConfig, ViKeRTrainer, cli
from unlearn_trainer.cli import ScriptArguments


@dataclass
class ViKeRArguments(ScriptArguments):
    """ScriptArguments plus where ViKeR's reference images come from."""

    reference_images_split: str | None = field(
        default=None,
        metadata={"help": "Split of --dataset holding images of irrelevant people, the reference images I' (Eq. 4); "
                          "ToyWorld demo: 'distant' (pictures of no identity)."},
    )
    reference_image_column: str | None = field(
        default=None, metadata={"help": "Column of that split with the images (default: 'image' / --image_column)."}
    )
    max_reference_images: int | None = field(
        default=None, metadata={"help": "Use only the first N rows of that split."}
    )


def method_kwargs(script_args: ViKeRArguments, data, model, processor) -> dict:
    """``reference_images=`` for ViKeRTrainer, read from ``--reference_images_split``."""
    if script_args.reference_images_split is None:
        raise ValueError("ViKeR needs reference images of people outside the forget set: pass "
                         "--reference_images_split <split of --dataset with their images>.")
    rows = cli.data_split(script_args, data, script_args.reference_images_split)
    if script_args.max_reference_images:
        n = min(script_args.max_reference_images, len(rows))
        rows = rows.select(range(n)) if hasattr(rows, "select") else rows[:n]
    return {"reference_images": rows, "reference_image_column": script_args.reference_image_column}


# ToyWorld defaults (used only when no --model_name_or_path is given): the paper's k=5 and lam=0.05, LoRA r=8,
# reference images: the 16 'distant' pictures of no identity; lr 3e-4 x 60 steps of batch 8, plus two guards the
# world needs (retain NLL on, forget ceiling 1 nat). How they were chosen: benchmarks/README.md, "Method notes", ViKeR.
DEMO_DEFAULTS = dict(learning_rate=3e-4, max_steps=60, per_device_train_batch_size=8, forget_loss_ceiling=1.0,
                     reference_images_split="distant", lr_scheduler_type="constant", seed=0)


def main(argv=None):
    """Run the example (``argv``: command-line arguments, default ``sys.argv[1:]``); returns the trainer."""
    script_args, config, model_args = cli.parse_args(ViKeRConfig, DEMO_DEFAULTS, argv, script_args_cls=ViKeRArguments,
                                                     description=__doc__)
    model, processor, is_demo = cli.load_model_and_processor(model_args, script_args)
    data = cli.load_data(script_args)
    peft_config = cli.lora_config(model_args, model)
    unlearning_eval = cli.unlearning_eval_callback(script_args, config, processor, data)
    method_inputs = method_kwargs(script_args, data, model, processor)
    trainer = ViKeRTrainer(
        model=model,
        args=config,
        forget_dataset=data.forget,
        retain_dataset=data.retain,
        processing_class=processor,
        peft_config=peft_config,
        ref_model=cli.reference_model(model_args, script_args, ViKeRTrainer, config, peft_config),
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
