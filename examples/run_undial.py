r"""Unlearn with UNDIAL (self-distillation with adjusted logits; Dong et al. 2024).

    python examples/run_undial.py                    # offline ToyWorld demo (builds the full model once)
    python examples/run_undial.py --model_name_or_path llava-hf/llava-1.5-7b-hf --dataset my_forget_data \
        --forget_split forget --gamma 10 --learning_rate 1e-4 --max_steps 100
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/run_undial.py ...
        # GPUs; also fsdp.yaml and deepspeed_zero3.yaml in that folder
    torchrun --nproc_per_node 2 examples/run_undial.py --use_cpu ...   # several processes on CPU (gloo)

Run with --help for every option (grouped: data, the method's, model, training); --config file.yaml reads them
from a YAML file (the command line wins).
"""

from unlearn_trainer import UNDIALConfig, UNDIALTrainer, cli

# ToyWorld defaults (used only when no --model_name_or_path is given): UNDIAL (gamma 10) + retain NLL, LoRA r=8.
# Sweep: benchmarks/README.md.
DEMO_DEFAULTS = dict(learning_rate=1e-2, max_steps=60, per_device_train_batch_size=8, gamma=10.0,
                     lr_scheduler_type="constant", seed=0)


def main(argv=None):
    """Run the example (``argv``: command-line arguments, default ``sys.argv[1:]``); returns the trainer."""
    script_args, config, model_args = cli.parse_args(UNDIALConfig, DEMO_DEFAULTS, argv, description=__doc__)
    model, processor, is_demo = cli.load_model_and_processor(model_args, script_args)
    data = cli.load_data(script_args)
    peft_config = cli.lora_config(model_args, model)
    unlearning_eval = cli.unlearning_eval_callback(script_args, config, processor, data)
    trainer = UNDIALTrainer(
        model=model,
        args=config,
        forget_dataset=data.forget,
        retain_dataset=data.retain,
        processing_class=processor,
        peft_config=peft_config,
        ref_model=cli.reference_model(model_args, script_args, UNDIALTrainer, config, peft_config),
        callbacks=[unlearning_eval],
        model_card_kwargs=cli.model_card_kwargs(script_args),
    )
    trainer.train(resume_from_checkpoint=cli.checkpoint_to_resume(config))
    trainer.save_model(config.output_dir)
    cli.report(trainer, unlearning_eval, script_args, is_demo)
    return trainer


if __name__ == "__main__":
    main()
