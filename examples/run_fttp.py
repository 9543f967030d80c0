r"""Unlearn with FTTP (Forget the Token and Pixel): gradient ascent on the tokens that spell the concept (the
person's name), plain NLL on every other answer token of the same sample (FTTP Eq. 7). The paper needs no
retain set (--retain_split none); a retain split adds the retain NLL, which the ToyWorld demo keeps on.

    python examples/run_fttp.py                      # offline ToyWorld demo (concepts: each row's name + surname)
    python examples/run_fttp.py --model_name_or_path llava-hf/llava-1.5-7b-hf --dataset my_forget_data \
        --forget_split forget --retain_split none --concept_key name --learning_rate 3e-4 \
        --per_device_train_batch_size 2 --max_steps 20
    accelerate launch examples/run_fttp.py ...        # on GPUs; on CPU: torchrun --nproc_per_node 2 ... --use_cpu

The concept of each forget row is read from the column named by --concept_key (a string, or a list of aliases
such as ["Donald Trump", "Trump"]); an answer that does not contain it is an error unless --missing_concept gd.
Run with --help for every option (grouped: data, the method's, model, training); --config file.yaml reads them
from a YAML file (the command line wins).
"""

from unlearn_trainer import FTTPConfig, FTTPTrainer, cli

# ToyWorld defaults (used only when no --model_name_or_path is given): the paper's weights, lr 3e-4 and LoRA, 60
# steps of batch 8, plus two guards the world needs (retain NLL on, concept-token ceiling 1 nat). How they were
# chosen: benchmarks/README.md, "Method notes", FTTP.
DEMO_DEFAULTS = dict(learning_rate=3e-4, max_steps=60, per_device_train_batch_size=8, forget_loss_ceiling=1.0,
                     lr_scheduler_type="constant", seed=0)


def main(argv=None):
    """Run the example (``argv``: command-line arguments, default ``sys.argv[1:]``); returns the trainer."""
    script_args, config, model_args = cli.parse_args(FTTPConfig, DEMO_DEFAULTS, argv, description=__doc__)
    model, processor, is_demo = cli.load_model_and_processor(model_args, script_args)
    data = cli.load_data(script_args)
    peft_config = cli.lora_config(model_args, model)
    unlearning_eval = cli.unlearning_eval_callback(script_args, config, processor, data)
    trainer = FTTPTrainer(
        model=model,
        args=config,
        forget_dataset=data.forget,
        retain_dataset=data.retain,
        processing_class=processor,
        peft_config=peft_config,
        ref_model=cli.reference_model(model_args, script_args, FTTPTrainer, config, peft_config),
        callbacks=[unlearning_eval],
        model_card_kwargs=cli.model_card_kwargs(script_args),
    )
    trainer.train(resume_from_checkpoint=cli.checkpoint_to_resume(config))
    trainer.save_model(config.output_dir)
    cli.report(trainer, unlearning_eval, script_args, is_demo)
    return trainer


if __name__ == "__main__":
    main()
