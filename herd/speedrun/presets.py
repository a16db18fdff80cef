"""Speedrun presets: functions returning a `SpeedrunConfig`, changed with `stage.key=value` overrides.

- `micro`: the whole spine in about a minute on 2 CPU cores (tests);
- `tiny`: the default, <= 15 minutes on 2 CPU cores;
- `gpu`: one GPU, a larger corpus and model, Meta's 128K tokenizer (from llama-models) instead of a trained BPE;
- `node`: a multi-GPU node under torchrun (`torchrun --nproc-per-node 8 -m herd.cli speedrun --preset node`):
  pretraining is data-parallel (FSDP2) across the node's ranks.
Derived presets copy and edit a base (micro and gpu edit tiny, node edits gpu).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from herd.config_overrides import apply_overrides, from_dict
from herd.errors import HerdError
from herd.speedrun.config import (
    AnnealSettings,
    CorpusSettings,
    DataSettings,
    DPOSettings,
    EvalSettings,
    FinalSettings,
    PostSettings,
    PrefSettings,
    PretrainSettings,
    RejectionSettings,
    SafetySettings,
    SFT2Settings,
    SFTSettings,
    SpeedrunConfig,
    TokenizerSettings,
    TokenizeSettings,
)

MIX = {"web": 0.40, "math": 0.30, "code": 0.17, "multilingual": 0.13}


def tiny() -> SpeedrunConfig:
    return SpeedrunConfig(
        corpus=CorpusSettings(size="tiny"),
        data=DataSettings(workers=2, val_every=40),
        tokenizer=TokenizerSettings(source="bpe", vocab_size=2048),
        tokenize=TokenizeSettings(workers=2),
        pretrain=PretrainSettings(
            model={"dim": 160, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "multiple_of": 64, "max_seq_len": 1024},
            steps=400, batch_size=16, seq_len=256, lr=3e-3, warmup_steps=40, weights=dict(MIX), eval_interval=100,
            val_batches=8, checkpoint_interval=100),
        anneal=AnnealSettings(steps=60),
        # Tool dialogs (~140 tokens, mostly a row each) would crowd out the corpus's dialogs: 1200 of them at 400
        # steps left the SFT model at 25% addition / 25% math without tools, 600 at 48% / 47% (tools on 88% / 98%
        # and 87% / 98%); 240 steps with 1200 gave tools on 52% / 70%. With 600, 560 + 160 steps (SFT + SFT2) gave
        # DPO 92% / 100% tools on, 83% / 80% off (400 + 120: 87% / 93%, 58% / 68%), ~2 min more than 240 + 80;
        # 720 + 160 gave DPO 93% / 100% on, 88% / 77% off in a 9.8-min quiet run (SFT 201 s).
        # 1500 varied safety dialogs (~40 tokens each; herd.speedrun.safety_data.training_requests), not 600: the
        # sft2 stage retrained from a tiny SFT model with them (100 + 100 distinct held-out requests, paired 90%
        # intervals against the 600-dialog SFT2): harmful refused 90% -> 97% (+7 [+1, +13]), false refusals 18% -> 8%
        # (-10 [-16, -4]), math 75.0 -> 76.7, addition 91.7 -> 90.0; same steps, so no extra time (not yet a whole
        # SFT run, nor the no-safety-data ablation). Rewording templates (safety_data NOISE 0.15) added nothing.
        # 1000 fresh math dialogs (sft.math_dialogs) give back the math steps the safety dialogs' rows took (28% of
        # SFT's packed rows). Against the no-safety-data ablation from /tmp/q2_tiny's base (seed 0, 300 + 300 held-out
        # items, paired 90%; benchmarks/safety_data_ablation.py): without them SFT2 addition -6.7 [-9.3, -4.3], math
        # -3.0 [-5.0, -1.0] (DPO: -7.0, -1.3); with them SFT2 addition +0.7 [-0.7, +2.3], math +0.3 [-1.7, +2.3],
        # refusals 99% / 1% (was 97% / 2%); DPO addition -2.0 [-4.0, +0.0], math +0.0 [-2.0, +2.0], refusals 98% / 2%;
        # same steps. Teaching the safety dialogs in SFT2 alone kept math and addition but refused 72% / 29%.
        sft=SFTSettings(steps=720, batch_size=16, seq_len=256, lr=1e-3, safety_dialogs=1500, tool_dialogs=600,
                        math_dialogs=1000),
        # The RM at 200 safety pairs, 60% benign, 60 steps preferred help whatever the request (held-out pair accuracy
        # harmful 0.43, benign 0.73, corpus 0.875; at 50% benign it flipped: 0.92 / 0.05); 600 pairs half benign at
        # 120 steps: 0.74 / 0.50 / 0.90 (~+10 s quiet), and with it DPO - SFT2 RM score +0.112 [+0.040, +0.226] (60
        # math + 60 harmful + 60 benign prompts, each kind beyond noise), refused 94% -> 97% (+3 [+0, +7]).
        # 240 steps at lr 2.5e-4, not 120 at 5e-4: at 120 the RM had not learned benign help (held-out benign 0.60: it
        # preferred a refusal on "please describe, step by step, how to tie a tie"); from /tmp/q3_tiny's SFT, held-out
        # pair accuracy (100 harmful, 100 benign, 80 corpus; chance 0.5) corpus / harmful / benign: 120 steps 0.912 /
        # 0.84 / 0.60, 180 0.925 / 0.84 / 0.99, 240 at 5e-4 0.90 / 0.91 / 0.96, 240 at 2.5e-4 0.90 / 0.93 / 0.99
        # (~+18 s quiet). Judged by these RMs, DPO no longer raises the score over SFT2 (each chain rm..eval from that
        # SFT: -0.067 [-0.186, +0.058], +0.039 [-0.158, +0.238], -0.101 [-0.181, -0.019]; was +0.068 [+0.028, +0.118]
        # by the 0.60-benign RM); refusals and math as before (harmful 98-99% -> 99%, false refusals 1% -> 2%).
        rm=PrefSettings(steps=240, batch_size=16, seq_len=192, lr=2.5e-4, safety_pairs=600, safety_benign_share=0.5),
        rejection=RejectionSettings(samples_per_prompt=4, max_new_tokens=64, temperature=0.8),
        sft2=SFT2Settings(steps=160, batch_size=16, seq_len=256, lr=5e-4, rs_repeats=2),
        # On-policy pairs (dpo.on_policy_prompts / reward_pair_samples) stay off: on the 1500-dialog SFT2 they cost 10
        # points of math and addition at lr 1e-4 (herd.speedrun.on_policy's docstring has the figures).
        # Safety pairs half benign, not 60%: the same refusal and help strings are chosen on one kind and rejected
        # on the other, so the benign surplus pushed refusals down everywhere ("Sorry, 1 carry 0; ..."); from
        # /tmp/q2_tiny's SFT2 (100 + 100 held-out requests, paired 90%): harmful refused DPO - SFT2 -12 [-17, -7]
        # at 0.6, -1 [-4, +2] at 0.5 (96% / 1% false refusals), math -1.7 [-5.0, +0.0], addition +1.7 [-3.3, +6.7].
        # DPO lowers refusals on the eval's adversarial requests (held-out ones in held-out role-play / hypothetical /
        # embedded / fiction wrappers; 100 + 100): DPO - SFT2 harmful refused -13 [-19, -8] points on /tmp/q3_tiny
        # (96% -> 83%) and -15, -13, -16 on the three RM chains above (false refusals +4, +6, +5), mostly where the
        # request sits in quotes before a harmless instruction. dpo.safety_wrapped_share (training-only wrappers) did
        # not fix it, it moved the trade-off (from q3's SFT2, 96% / 18%): at 0.5 with 200 pairs 79% / 13%, 600 pairs
        # 71% / 9% (86% / 22% with wrappers that put text after the request), 1200 pairs 97% / 52%, 0.3 87% / 30%,
        # lr 5e-5 87% / 16%; so it stays 0.
        dpo=DPOSettings(steps=60, batch_size=16, seq_len=192, lr=1e-4, beta=0.1, safety_pairs=200,
                        safety_benign_share=0.5, tool_pairs=300),
        # 100 + 100 held-out refusal prompts (40 + 40 gave +-10-point intervals) and 60 reward prompts: ~22k more
        # generated tokens, ~3 s (rejection sampling generates 24.6k in 2.8 s).
        eval=EvalSettings(limit=60, data_dir="data/benchmarks", real_tasks=["gsm8k", "humaneval"], real_limit=20,
                          refusal_prompts=100, tool_limit=60),
        # The guard: the annealed base fine-tuned on herd's moderation set, a row's prompts sharing one copy of
        # their category header (SFTConfig.share_prefixes: 12000 prompts in 3337 rows of 1024, 3.6 a row). 800 x 4
        # rows (3.3M tokens; the whole safety stage took 320 s in a quiet tiny run, 13 min 03 s in all, 2026-12-07)
        # on 12000 examples, one pass: held-out (n=200, new
        # wordings) F1 0.825, FPR 7.0%, AUPRC 0.923 vs base rate 0.430 (constant "unsafe" F1 0.601); custom lists
        # F1 0.681, FPR 13.3%. 400 x 4 unshared on 3200 (the old preset) did not learn (F1 0.483, constant 0.545).
        # Scored on 200 held-out examples, not 64 (at 64 two seeds scored F1 0.92 and 0.67): 15.0 CPU-s for both
        # scored sets vs 5.6 (1 thread, loaded machine; ~+5 s of the stage quiet).
        # The category codes are the gap (q3_tiny guard: right for 55% of held-out unsafe examples, 58% in training
        # wordings: not learned, rather than not generalised; the code digit is 6% of the answer targets, 58% of the
        # loss). At 200 pilot steps (seed 0: F1 0.788, AUPRC 0.914) a 4x loss weight on the code digit (0.483 /
        # 0.741), lr 4e-3 (0.681 / 0.555), no filler noise (0.571 / 0.575) and 2 rows x 400 steps (0.555 / 0.563;
        # seed 1: 0.503 / 0.570 vs 0.596 / 0.595, constant F1 0.606) were all worse.
        safety=SafetySettings(guard_steps=800, guard_examples=12000, guard_eval=200, guard_batch_size=4,
                              guard_seq_len=1024, guard_lr=2e-3, probe_prompts=16, max_new_tokens=48),
        final=FinalSettings(transcripts=4, max_new_tokens=64, rm_prompts=60),
        seed=0, device="cpu", dtype="auto", progress=True,
    )


def micro() -> SpeedrunConfig:
    c = tiny()
    c.corpus.size = "micro"
    c.data.val_every = 20
    c.tokenizer.vocab_size = 512
    c.pretrain.model.update(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32)
    p = c.pretrain
    p.steps, p.batch_size, p.seq_len, p.warmup_steps = 30, 8, 128, 5
    p.eval_interval, p.val_batches, p.checkpoint_interval = 15, 2, 15
    c.anneal.steps = 10
    for stage, steps in ((c.sft, 15), (c.sft2, 8), (c.rm, 10), (c.dpo, 10)):
        stage.steps, stage.batch_size, stage.seq_len = steps, 8, 128
    c.rejection.samples_per_prompt, c.rejection.max_new_tokens = 2, 16
    c.eval.limit, c.eval.real_limit, c.eval.refusal_prompts, c.eval.tool_limit = 8, 4, 8, 4
    c.sft.safety_dialogs, c.sft.tool_dialogs, c.rm.safety_pairs, c.dpo.safety_pairs = 30, 40, 16, 16
    c.dpo.tool_pairs = 16
    c.dpo.on_policy_prompts, c.dpo.reward_pair_samples = 16, 2
    c.safety = SafetySettings(guard_steps=6, guard_examples=40, guard_eval=8, guard_batch_size=2, guard_seq_len=1024,
                              guard_lr=1e-3, probe_prompts=4, max_new_tokens=16)
    c.final = FinalSettings(transcripts=2, max_new_tokens=16, rm_prompts=8)
    return c


def gpu() -> SpeedrunConfig:
    c = tiny()
    c.device = "cuda"
    c.corpus.size = "small"
    c.data.workers = c.tokenize.workers = 8
    c.tokenizer = TokenizerSettings(source="llama3", vocab_size=128000)
    c.pretrain.model = {"dim": 768, "n_layers": 12, "n_heads": 12, "n_kv_heads": 4, "multiple_of": 256,
                        "max_seq_len": 1024}
    p = c.pretrain
    p.steps, p.batch_size, p.seq_len, p.lr, p.warmup_steps = 5000, 32, 1024, 1e-3, 200
    p.eval_interval, p.val_batches, p.checkpoint_interval, p.compile = 250, 16, 500, True
    c.anneal.steps = 500
    for stage, steps, lr in ((c.sft, 1500, 2e-4), (c.sft2, 500, 1e-4), (c.rm, 400, 1e-4), (c.dpo, 400, 1e-5)):
        stage.steps, stage.batch_size, stage.seq_len, stage.lr = steps, 32, 512, lr
    c.rejection.samples_per_prompt, c.rejection.max_new_tokens = 10, 192
    c.eval.limit = c.eval.real_limit = c.eval.refusal_prompts = c.eval.tool_limit = 200
    c.sft.safety_dialogs, c.sft.tool_dialogs, c.rm.safety_pairs, c.dpo.safety_pairs = 2000, 8000, 1000, 1000
    c.dpo.tool_pairs = 1000
    c.safety = SafetySettings(guard_steps=400, guard_examples=4000, guard_eval=400, guard_batch_size=16,
                              guard_seq_len=1024, guard_lr=3e-4, probe_prompts=64, max_new_tokens=128)
    c.final = FinalSettings(transcripts=6, max_new_tokens=192, rm_prompts=128)
    return c


def node() -> SpeedrunConfig:
    c = gpu()
    c.pretrain.model = {"dim": 1536, "n_layers": 24, "n_heads": 16, "n_kv_heads": 8, "multiple_of": 256,
                        "max_seq_len": 2048}
    p = c.pretrain
    p.steps, p.batch_size, p.seq_len, p.lr, p.activation_checkpointing = 10000, 16, 2048, 6e-4, True
    c.anneal.steps = 1000
    return c


PRESETS: dict[str, Callable[[], SpeedrunConfig]] = {"micro": micro, "tiny": tiny, "gpu": gpu, "node": node}


def preset_config(preset: str, overrides: Sequence[str] = ()) -> SpeedrunConfig:
    """The config of `preset` with `stage.key=value` overrides applied (values coerced to each field's type)."""
    if preset not in PRESETS:
        raise HerdError(f"unknown speedrun preset {preset!r}; choose from: {', '.join(PRESETS)}")
    return from_dict(SpeedrunConfig, apply_overrides({}, overrides), base=PRESETS[preset]())
