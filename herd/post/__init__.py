"""Post-training: SFT, reward model, rejection sampling, DPO, LoRA adapters and checkpoint averaging.

Each stage is one function taking its typed config (`herd sft | rm | rejection-sample | dpo --config C k=v`).
"""

from herd.post.averaging import average_checkpoints
from herd.post.dpo import DPOConfig, dpo
from herd.post.lora import LoRAConfig, apply_lora, load_adapters, merge_lora, save_adapters
from herd.post.rejection_sampling import RejectionSamplingConfig, rejection_sample
from herd.post.reward_model import RewardConfig, RewardModel, load_reward_model, save_reward_model, train_reward_model
from herd.post.sft import SFTConfig, sft
from herd.post.stage import PostConfig, PostResult

__all__ = [
    "DPOConfig", "LoRAConfig", "PostConfig", "PostResult", "RejectionSamplingConfig", "RewardConfig", "RewardModel",
    "SFTConfig", "apply_lora", "average_checkpoints", "dpo", "load_adapters", "load_reward_model", "merge_lora",
    "rejection_sample", "save_adapters", "save_reward_model", "sft", "train_reward_model",
]
