"""Post-training: SFT, reward model, rejection sampling, DPO, PPO and GRPO, LoRA adapters and checkpoint averaging.

Each stage is one function taking its typed config (`herd sft | rm | dpo | ppo | grpo ... --config C k=v`).
"""

from herd.post.averaging import average_checkpoints
from herd.post.dpo import DPOConfig, dpo
from herd.post.grpo import GRPOConfig, grpo
from herd.post.lora import LoRAConfig, apply_lora, load_adapters, merge_lora, save_adapters
from herd.post.ppo import PPOConfig, ppo
from herd.post.rejection_sampling import RejectionSamplingConfig, rejection_sample
from herd.post.reward_model import RewardConfig, RewardModel, load_reward_model, save_reward_model, train_reward_model
from herd.post.sft import SFTConfig, sft
from herd.post.stage import PostConfig, PostResult

__all__ = [
    "DPOConfig", "GRPOConfig", "LoRAConfig", "PPOConfig", "PostConfig", "PostResult", "RejectionSamplingConfig",
    "RewardConfig", "RewardModel", "SFTConfig", "apply_lora", "average_checkpoints", "dpo", "grpo", "load_adapters",
    "load_reward_model", "merge_lora", "ppo", "rejection_sample", "save_adapters", "save_reward_model", "sft",
    "train_reward_model",
]
