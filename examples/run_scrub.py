r"""Unlearn with SCRUB (Kurmanji et al. 2023): alternate max-steps away from the original model on forget batches
and min-steps toward it (KL + NLL) on retain batches.

    python examples/run_scrub.py                     # offline ToyWorld demo (builds the full model once)
    python examples/run_scrub.py --model_name_or_path llava-hf/llava-1.5-7b-hf --dataset my_forget_data \
        --forget_split forget --retain_split retain --max_steps_per_cycle 1 --min_steps_per_cycle 1 --max_cycles 20
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/run_scrub.py ...
        # GPUs; also fsdp.yaml and deepspeed_zero3.yaml in that folder

SCRUB needs a retain split. Steps run in cycles of --max_steps_per_cycle max-steps then --min_steps_per_cycle
min-steps; after --max_cycles cycles (the paper's msteps) only min-steps run.
Run with --help for every option (grouped: data, the method's, model, training); --config file.yaml reads them
from a YAML file (the command line wins).
"""

from unlearn_trainer import SCRUBConfig, SCRUBTrainer, cli

# ToyWorld defaults (used only when no --model_name_or_path is given): LoRA r=8, cycles of 1 max-step + 3 min-steps
# in every cycle (15 max-steps in 60); the sweep that chose them: benchmarks/README.md, "Method notes", SCRUB.
DEMO_DEFAULTS = dict(learning_rate=1e-3, max_steps=60, per_device_train_batch_size=8, lr_scheduler_type="constant",
                     min_steps_per_cycle=3, max_cycles=None, seed=0)


def main(argv=None):
    """Run the example (``argv``: command-line arguments, default ``sys.argv[1:]``); returns the trainer."""
    script_args, config, model_args = cli.parse_args(SCRUBConfig, DEMO_DEFAULTS, argv, description=__doc__)
    model, processor, is_demo = cli.load_model_and_processor(model_args, script_args)
    data = cli.load_data(script_args)
    peft_config = cli.lora_config(model_args, model)
    unlearning_eval = cli.unlearning_eval_callback(script_args, config, processor, data)
    trainer = SCRUBTrainer(
        model=model,
        args=config,
        forget_dataset=data.forget,
        retain_dataset=data.retain,
        processing_class=processor,
        peft_config=peft_config,
        ref_model=cli.reference_model(model_args, script_args, SCRUBTrainer, config, peft_config),
        callbacks=[unlearning_eval],
        model_card_kwargs=cli.model_card_kwargs(script_args),
    )
    trainer.train(resume_from_checkpoint=cli.checkpoint_to_resume(config))
    trainer.save_model(config.output_dir)
    cli.report(trainer, unlearning_eval, script_args, is_demo)
    return trainer


if __name__ == "__main__":
    main()
