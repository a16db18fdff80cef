"""The speedrun's typed config: run-wide settings plus one section per stage, each read as `stage.key=value`.

A section holds what the recipe chooses for its stage; the stage builds the library's own config from it
(`PretrainConfig`, `SFTConfig`, `RewardConfig`, `RejectionSamplingConfig`, `DPOConfig`) with the run's paths filled in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from herd.errors import HerdError

TOKENIZER_SOURCES = ("bpe", "llama3")


@dataclass
class CorpusSettings:
    """The generated raw corpus (`corpus` stage)."""

    size: str
    """Size of herd's generated corpus (herd.corpus): micro, tiny or small."""


@dataclass
class DataSettings:
    """The cleaning pipelines and the train / validation split (`data` stage)."""

    workers: int
    """Processes of each domain's cleaning pipeline."""
    val_every: int
    """Every val_every-th clean document of a domain goes to the validation split."""


@dataclass
class TokenizerSettings:
    """The tokenizer (`tokenizer` stage)."""

    source: str
    """bpe: a BPE of vocab_size trained on the training split; llama3: Meta's 128K tokenizer (uint32 shards)."""
    vocab_size: int
    """Words of the trained BPE (special tokens come on top); llama3 ignores it."""

    def __post_init__(self) -> None:
        if self.source not in TOKENIZER_SOURCES:
            raise HerdError(f"unknown tokenizer.source {self.source!r}; choose from: {', '.join(TOKENIZER_SOURCES)}")


@dataclass
class TokenizeSettings:
    """The token shards (`tokenize` stage)."""

    workers: int
    """Processes writing the token shards."""


@dataclass
class PretrainSettings:
    """The recipe's part of `PretrainConfig` (the stage adds the run's paths, seed, device and dtype)."""

    model: dict[str, Any]
    """ModelConfig fields on top of the tiny model preset (vocab_size: the tokenizer's)."""
    steps: int
    """Optimizer steps (the anneal adds its own on top)."""
    batch_size: int
    """Rows per micro-batch (per data-parallel rank)."""
    seq_len: int
    """Tokens per row."""
    lr: float
    """optim.lr: the peak learning rate."""
    warmup_steps: int
    """optim.warmup_steps."""
    weights: dict[str, float]
    """data.weights: domain -> mix weight."""
    eval_interval: int
    """Validate every this many steps."""
    val_batches: int
    """data.val_batches."""
    checkpoint_interval: int
    """Save a resume checkpoint every this many steps."""
    compile: bool = False
    """torch.compile each block."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass."""


@dataclass
class AnnealSettings:
    """Llama 3's annealing (`anneal` stage)."""

    steps: int
    """Steps continuing pretraining's last checkpoint, the LR falling linearly to 0."""


@dataclass
class PostSettings:
    """The recipe's part of a post-training stage's `PostConfig` (`sft`, `rm` stages): warmup is
    min(10, steps // 5) steps and a checkpoint is saved halfway."""

    steps: int
    """Optimizer steps."""
    batch_size: int
    """Examples per micro-batch (packed rows for SFT, preference pairs for the reward model and DPO)."""
    seq_len: int
    """Tokens per row."""
    lr: float
    """optim.lr: the peak learning rate."""


@dataclass(kw_only=True)
class SFTSettings(PostSettings):
    """SFT round 1 on the corpus's chat dialogs plus safety and tool-use dialogs (`sft` stage)."""

    safety_dialogs: int
    """Safety dialogs added (herd.speedrun.safety_data): harmful requests refused, benign look-alikes helped."""
    tool_dialogs: int
    """Tool-use dialogs added (herd.speedrun.tool_data): sums and word problems answered through the calculator."""
    math_dialogs: int = 0
    """Fresh math dialogs added (the corpus's mix of word problems and bare sums): at a fixed step count they give
    back the math steps the safety dialogs' rows take."""


@dataclass(kw_only=True)
class PrefSettings(PostSettings):
    """A stage trained on the corpus's preference pairs plus safety pairs (`rm` stage; DPO adds beta)."""

    safety_pairs: int
    """Safety pairs added: a refusal beats compliance on harmful requests, help beats a refusal on benign ones."""
    safety_benign_share: float = 0.6
    """Share of the safety pairs on benign requests (help preferred); the rest refuse harmful ones."""


@dataclass(kw_only=True)
class SFT2Settings(PostSettings):
    """SFT round 2 on the rejection-sampled replies mixed with the round-1 dialogs (`sft2` stage)."""

    rs_repeats: int
    """Times each rejection-sampled reply is repeated in the mix."""


@dataclass(kw_only=True)
class DPOSettings(PrefSettings):
    """DPO from the round-2 model (`dpo` stage)."""

    beta: float
    """DPOConfig.beta."""
    tool_pairs: int
    """Tool-use pairs added (herd.speedrun.tool_data.tool_pairs): the answer copying the calculator's result beats a
    wrong one, calling beats guessing."""
    on_policy_prompts: int = 0
    """Training safety requests the round-2 model answers for on-policy pairs (its wrong replies rejected;
    herd.speedrun.on_policy); 0: none."""
    on_policy_samples: int = 4
    """Replies per safety request (the first greedy)."""
    reward_pair_samples: int = 0
    """Replies sampled per corpus training prompt for reward pairs (the reward model's best over its worst); 0: none."""
    safety_wrapped_share: float = 0.0
    """Share of the safety pairs whose request sits in an adversarial wrapper (role-play, "in theory", embedded in
    another request; herd.speedrun.safety_data.WRAPPERS)."""


@dataclass
class RejectionSettings:
    """The recipe's part of `RejectionSamplingConfig` (`rejection` stage)."""

    samples_per_prompt: int
    """Replies sampled per prompt; the reward model keeps the best."""
    max_new_tokens: int
    """Longest reply."""
    temperature: float
    """Sampling temperature."""


@dataclass
class EvalSettings:
    """The benchmarks every model is scored on (`eval` stage)."""

    limit: int
    """Samples of each synthetic task."""
    data_dir: str
    """Where the real benchmarks' data is (absent ones are skipped)."""
    real_tasks: list[str]
    """Real benchmarks (herd eval task names) scored when their data is in data_dir."""
    real_limit: int
    """Samples of each real benchmark."""
    refusal_prompts: int
    """Held-out harmful requests, and as many benign look-alikes, each model answers (refusal rates)."""
    tool_limit: int
    """Samples of synth_addition and synth_math each chat model also answers with the calculator tool offered
    (tools on); 0 skips."""


@dataclass
class SafetySettings:
    """Code Shield, and a Llama Guard fine-tuned from the annealed base, on the final model (`safety` stage)."""

    guard_steps: int
    """SFT steps turning the annealed base into a Llama Guard (herd guard train's path); 0 skips the guard."""
    guard_examples: int
    """Generated moderation examples it trains on (herd.safety.moderation_set)."""
    guard_eval: int
    """Held-out examples, in wordings training never shows, it is scored on."""
    guard_batch_size: int
    """Packed rows per SFT step."""
    guard_seq_len: int
    """Tokens per packed row: at least one Llama Guard 2 prompt (the pretraining model's max_seq_len bounds it)."""
    guard_lr: float
    """optim.lr of the guard's SFT."""
    probe_prompts: int
    """Held-out requests sent to the final model and moderated on the way in and out."""
    max_new_tokens: int
    """Longest reply of the final model to a probe."""


@dataclass
class FinalSettings:
    """RUN/final and its sample chats (`final` stage)."""

    transcripts: int
    """Sample chats with the final model."""
    max_new_tokens: int
    """Longest reply in a sample chat."""
    rm_prompts: int
    """Held-out math questions whose greedy replies the reward model scores (eval stage)."""


@dataclass
class SpeedrunConfig:
    """Every setting of a speedrun; the sections are the stages, in the order they run."""

    corpus: CorpusSettings
    data: DataSettings
    tokenizer: TokenizerSettings
    tokenize: TokenizeSettings
    pretrain: PretrainSettings
    anneal: AnnealSettings
    sft: SFTSettings
    rm: PrefSettings
    rejection: RejectionSettings
    sft2: SFT2Settings
    dpo: DPOSettings
    eval: EvalSettings
    safety: SafetySettings
    final: FinalSettings
    seed: int = 0
    """Seeds the corpus, the training runs and the sampling."""
    device: str = "cpu"
    """Device of every model stage (cpu, cuda, ...)."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Compute dtype of every training stage (`PretrainConfig.dtype`): auto is fp32 on CPU, bf16 on GPU."""
    progress: bool = True
    """Progress bars of the training stages."""
