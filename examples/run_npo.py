"""Unlearn with NPO (negative preference optimisation; Zhang et al. 2024), the MLLMU-Bench baseline.

    python examples/run_npo.py                       # offline ToyWorld demo (builds the full model once)
    python examples/run_npo.py --model_name_or_path llava-hf/llava-1.5-7b-hf --dataset my_forget_data \
        --forget_split forget --retain_split retain --beta 0.4 --learning_rate 1e-5 --max_steps 100
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/run_npo.py ...
        # GPUs; also fsdp.yaml and deepspeed_zero3.yaml in that folder
    torchrun --nproc_per_node 2 examples/run_npo.py --use_cpu ...   # several processes on CPU (gloo)

Run with --help for every option.
"""

from unlearn_trainer import NPOConfig, NPOTrainer
from unlearn_trainer.cli import run_method

# ToyWorld defaults (used only when no --model_name_or_path is given): NPO + retain NLL (GradDiff), LoRA r=8.
DEMO_DEFAULTS = dict(learning_rate=1e-3, max_steps=60, per_device_train_batch_size=8, beta=0.4,
                     lr_scheduler_type="constant", seed=0)

if __name__ == "__main__":
    run_method(NPOTrainer, NPOConfig, DEMO_DEFAULTS)
