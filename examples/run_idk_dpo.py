r"""Unlearn with IdkDPO: DPO with a refusal ("I don't know") as the chosen answer and the forget answer as the
rejected one (the TOFU / CLEAR "IDK+DPO" baseline), plus the retain NLL.

    python examples/run_idk_dpo.py                   # offline ToyWorld demo (refusal: the world's "i do not know who this is .")
    python examples/run_idk_dpo.py --model_name_or_path llava-hf/llava-1.5-7b-hf --dataset my_forget_data \
        --forget_split forget --retain_split retain --beta 0.1 --learning_rate 1e-5 --max_steps 100
    accelerate launch examples/run_idk_dpo.py ...     # on GPUs; on CPU: torchrun --nproc_per_node 2 ... --use_cpu

Each forget row gets one refusal from --refusals (default: an "I don't know"-style pool), chosen by --refusal_seed
and the row's position; the reference log-probabilities of refusal and answer are computed once and cached.
Run with --help for every option (grouped: data, the method's, model, training); --config file.yaml reads them
from a YAML file (the command line wins).
"""

from unlearn_trainer import IdkDPOConfig, IdkDPOTrainer, cli
from unlearn_trainer.toyworld import REFUSALS

# One refusal on ToyWorld: with the world's six, the tiny word-level model blends them at greedy decoding ("i cannot
# not not i cannot that .": forget coherence 0.25 at forget recall 5%, 3 seeds); with one it answers it whole (1.00,
# seed 0). benchmarks/README.md, "Paper claims: investigation".
DEMO_REFUSAL = REFUSALS[1]  # "i do not know who this is ."
# ToyWorld defaults (used only when no --model_name_or_path is given): one of the world's refusals, beta 0.1 + retain
# NLL, LoRA r=8. How they were chosen: benchmarks/README.md, "Method notes".
DEMO_DEFAULTS = dict(learning_rate=1e-3, max_steps=60, per_device_train_batch_size=8, beta=0.1,
                     refusals=[DEMO_REFUSAL], lr_scheduler_type="constant", seed=0)


def main(argv=None):
    """Run the example (``argv``: command-line arguments, default ``sys.argv[1:]``); returns the trainer."""
    script_args, config, model_args = cli.parse_args(IdkDPOConfig, DEMO_DEFAULTS, argv, description=__doc__)
    model, processor, is_demo = cli.load_model_and_processor(model_args, script_args)
    data = cli.load_data(script_args)
    peft_config = cli.lora_config(model_args, model)
    unlearning_eval = cli.unlearning_eval_callback(script_args, config, processor, data)
    trainer = IdkDPOTrainer(
        model=model,
        args=config,
        forget_dataset=data.forget,
        retain_dataset=data.retain,
        processing_class=processor,
        peft_config=peft_config,
        ref_model=cli.reference_model(model_args, script_args, IdkDPOTrainer, config, peft_config),
        callbacks=[unlearning_eval],
        model_card_kwargs=cli.model_card_kwargs(script_args),
    )
    trainer.train(resume_from_checkpoint=cli.checkpoint_to_resume(config))
    trainer.save_model(config.output_dir)
    cli.report(trainer, unlearning_eval, script_args, is_demo)
    return trainer


if __name__ == "__main__":
    main()
