r"""Unlearn with RMU (representation misdirection; Li et al. 2024, WMDP): steer one layer's hidden states on forget inputs.

    python examples/run_rmu.py                       # offline ToyWorld demo (builds the full model once)
    python examples/run_rmu.py --model_name_or_path llava-hf/llava-1.5-7b-hf --dataset my_forget_data \
        --forget_split forget --retain_split retain --steering_coeff 6.5 --alpha 1200 --learning_rate 5e-5
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/run_rmu.py ...
        # GPUs; also fsdp.yaml and deepspeed_zero3.yaml in that folder

RMU needs a retain split. The steered layer is --layer, or --layer_fraction of the decoder layers (paper: 7 of 32);
layers l-2..l train. With LoRA (the default) and no --lora_target_modules, LoRA goes on the --updated_modules of
those layers only (unlearn_trainer.trainers.rmu.rmu_lora_targets); --use_peft false trains them in full (the paper).
Run with --help for every option (grouped: data, the method's, model, training); --config file.yaml reads them
from a YAML file (the command line wins).
"""

from unlearn_trainer import RMUConfig, RMUTrainer, cli
from unlearn_trainer.trainers.rmu import rmu_lora_targets

# ToyWorld defaults (used only when no --model_name_or_path is given): LoRA r=8 on the MLPs of layers 0-1 of the
# 3-layer demo model (layer_fraction 7/32 -> layer 1), c = 20 (the paper's 6.5 barely moves these activations); the
# sweep that chose them: benchmarks/README.md, "Method notes", RMU.
DEMO_DEFAULTS = dict(learning_rate=1e-2, max_steps=120, per_device_train_batch_size=8, steering_coeff=20.0,
                     lr_scheduler_type="constant", seed=0)


def main(argv=None):
    """Run the example (``argv``: command-line arguments, default ``sys.argv[1:]``); returns the trainer."""
    script_args, config, model_args = cli.parse_args(RMUConfig, DEMO_DEFAULTS, argv, description=__doc__)
    model, processor, is_demo = cli.load_model_and_processor(model_args, script_args)
    data = cli.load_data(script_args)
    peft_config = cli.lora_config(model_args, model)
    if peft_config is not None and not model_args.lora_target_modules:
        peft_config.target_modules = rmu_lora_targets(model, config)  # LoRA on the updated layers only
    unlearning_eval = cli.unlearning_eval_callback(script_args, config, processor, data)
    trainer = RMUTrainer(
        model=model,
        args=config,
        forget_dataset=data.forget,
        retain_dataset=data.retain,
        processing_class=processor,
        peft_config=peft_config,
        ref_model=cli.reference_model(model_args, script_args, RMUTrainer, config, peft_config),
        callbacks=[unlearning_eval],
        model_card_kwargs=cli.model_card_kwargs(script_args),
    )
    trainer.train(resume_from_checkpoint=cli.checkpoint_to_resume(config))
    trainer.save_model(config.output_dir)
    cli.report(trainer, unlearning_eval, script_args, is_demo)
    return trainer


if __name__ == "__main__":
    main()
