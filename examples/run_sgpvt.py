r"""Unlearn with SGPVT (Self-Generated Proximal Visual Tokens): GA on the forget sample plus KL distillation from
the frozen model on perturbed visual tokens, so look-alike ("proximal") concepts are kept.

    python examples/run_sgpvt.py                     # offline ToyWorld demo
    python examples/run_sgpvt.py --model_name_or_path llava-hf/llava-1.5-7b-hf --dataset my_forget_data \
        --forget_split forget --retain_split none --learning_rate 2e-5 --max_steps 20 --per_device_train_batch_size 4
    accelerate launch examples/run_sgpvt.py ...       # on GPUs; torchrun --nproc_per_node 2 ... --use_cpu on CPU

The damage boundary s_min is estimated from images of distant concepts: the demo uses the world's distant
images; from the command line with a real dataset, fix it with `--damage_boundary 0.2` (or pass
`distant_images=` to `SGPVTTrainer` from Python).
Run with --help for every option (grouped: data, the method's, model, training); --config file.yaml reads them
from a YAML file (the command line wins).
"""

from unlearn_trainer import SGPVTConfig, SGPVTTrainer, cli

# ToyWorld defaults (used only when no --model_name_or_path is given): the paper's lambda_k=0.3, LoRA, no
# retain set (SGPVT's retention comes from the distillation stream). lr scaled to the world; a forget sample's GA
# stops past a mean token NLL of 20 nats (a guard the paper does not have; the card lists it).
DEMO_DEFAULTS = dict(learning_rate=1.5e-4, max_steps=60, per_device_train_batch_size=8, lr_scheduler_type="constant",
                     retain_split="none", forget_loss_ceiling=20.0, seed=0)


def method_kwargs(script_args, data, model, processor) -> dict:
    """``distant_images=`` for SGPVTTrainer: the demo world's distant images (real data: fix --damage_boundary)."""
    if "world" in data.extras:
        return {"distant_images": data.extras["world"].distant_images(100)}
    return {}


def main(argv=None):
    """Run the example (``argv``: command-line arguments, default ``sys.argv[1:]``); returns the trainer."""
    script_args, config, model_args = cli.parse_args(SGPVTConfig, DEMO_DEFAULTS, argv, description=__doc__)
    model, processor, is_demo = cli.load_model_and_processor(model_args, script_args)
    data = cli.load_data(script_args)
    peft_config = cli.lora_config(model_args, model)
    unlearning_eval = cli.unlearning_eval_callback(script_args, config, processor, data)
    method_inputs = method_kwargs(script_args, data, model, processor)
    trainer = SGPVTTrainer(
        model=model,
        args=config,
        forget_dataset=data.forget,
        retain_dataset=data.retain,
        processing_class=processor,
        peft_config=peft_config,
        ref_model=cli.reference_model(model_args, script_args, SGPVTTrainer, config, peft_config),
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
