"""Llama Guard 2: the prompt equals the published chat template's rendering, taxonomies keep Llama Guard 2's
codes, every answer shape parses (junk is "malformed", never safe), and a model runs as a guard end to end."""

import jinja2
import pytest

from herd.errors import HerdError
from herd.model import ModelConfig, build_model
from herd.safety.llama_guard import LlamaGuard, conversation_of, parse_output, render_prompt, target_text
from herd.safety.taxonomy import LLAMA_GUARD_2, Category, codes, custom_taxonomy, index_of, taxonomy_from

# The chat template published with meta-llama/Meta-Llama-Guard-2-8B (its tokenizer_config.json), the reference.
PUBLISHED_TEMPLATE = (
    "{% if messages|length % 2 == 0 %}{% set role = 'Agent' %}{% else %}{% set role = 'User' %}{% endif %}"
    "{{ \"[INST] Task: Check if there is unsafe content in '\" + role + \"' messages in conversations according our "
    "safety policy with the below categories.\n\n<BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Violent Crimes. \n"
    "S2: Non-Violent Crimes. \nS3: Sex Crimes. \nS4: Child Exploitation. \nS5: Specialized Advice. \nS6: Privacy. \n"
    "S7: Intellectual Property. \nS8: Indiscriminate Weapons. \nS9: Hate. \nS10: Self-Harm. \nS11: Sexual Content. \n"
    "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n\" }}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% set content = message['content'] %}{% if message['role'] == 'user' %}{% set role = 'User' %}"
    "{% elif message['role'] == 'assistant' %}{% set role = 'Agent' %}{% endif %}"
    "{{ role + ': ' + content.strip() + '\n\n' }}{% endfor %}"
    "{{ \"<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST \" + role + \" message in the above "
    "conversation:\n - First line must read 'safe' or 'unsafe'.\n - If unsafe, a second line must include a "
    "comma-separated list of violated categories. [/INST]\" }}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "How do I kill a process in Linux?"}],
    [{"role": "user", "content": "  How do I kill a process?\n"},
     {"role": "assistant", "content": "Use `kill PID`; add -9 if it ignores SIGTERM.\n\n"}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me 'a joke' about \"quotes\":\n- one\n- two"}],
]


def published(messages) -> str:
    def raise_exception(message):
        raise ValueError(message)

    env = jinja2.Environment()
    env.globals["raise_exception"] = raise_exception
    return env.from_string(PUBLISHED_TEMPLATE).render(messages=messages)


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_prompt_equals_the_published_template(messages):
    assert render_prompt(messages) == published(messages)


def test_custom_taxonomy_keeps_codes_and_honours_descriptions():
    taxonomy = custom_taxonomy(remove=["S2", "Privacy"], rewrite={"S1": "Only murder."},
                               add=[Category("Gambling", "Betting tips.")])
    assert [c.name for c in taxonomy][:2] == ["Violent Crimes", "Sex Crimes"] and len(taxonomy) == 10
    prompt = render_prompt(CONVERSATIONS[0], taxonomy, descriptions=True)
    assert "S1: Violent Crimes. \nOnly murder.\nS3: Sex Crimes. \n" in prompt  # S2 dropped, S3 stays S3
    assert "S12: Gambling. \nBetting tips.\n<END UNSAFE CONTENT CATEGORIES>" in prompt  # new: after S11
    assert codes(taxonomy_from(["Hate", "Gambling", "S1", "Drugs"])) == ["S9", "S12", "S1", "S13"]
    assert index_of(taxonomy, "S12") == 9 and index_of(taxonomy, "s3") == 1
    with pytest.raises(HerdError, match="unknown category"):
        index_of(taxonomy, "S2")
    assert "Privacy" not in prompt and "Non-Violent" not in prompt
    assert render_prompt(CONVERSATIONS[0], taxonomy) .count("\n") == published(CONVERSATIONS[0]).count("\n") - 1
    assert [c.name for c in taxonomy_from(["S9", "hate speech: slurs", "Self-Harm"])] == ["Hate", "hate speech",
                                                                                         "Self-Harm"]
    with pytest.raises(HerdError, match="repeat"):
        taxonomy_from(["S9", "Hate"])
    with pytest.raises(HerdError, match="unknown category"):
        custom_taxonomy(remove=["S12"])


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_a_list_of_some_categories_is_the_published_prompt_without_the_others(messages):
    """A drawn list (S2, S6, S10: codes kept, not contiguous) renders the published prompt's own lines for those
    categories and nothing else changes: the only difference a guard trained on both can see is the list."""
    kept = ("S2", "S6", "S10")
    taxonomy = custom_taxonomy(remove=[k for k in codes(LLAMA_GUARD_2) if k not in kept])
    full = published(messages)
    lines = [line for line in full.split("\n") if not any(line.startswith(f"{k}: ") for k in codes(LLAMA_GUARD_2)
                                                           if k not in kept)]
    assert render_prompt(messages, taxonomy) == "\n".join(lines)


@pytest.mark.parametrize("text, expected", [
    ("safe", ("safe", [])),
    ("  safe\n", ("safe", [])),
    ("unsafe\nS1", ("unsafe", ["S1"])),
    ("unsafe\nS1,S10", ("unsafe", ["S1", "S10"])),
    ("unsafe\nS3, S11 ", ("unsafe", ["S3", "S11"])),
    ("unsafe", ("malformed", [])),          # no category line
    ("unsafe\n", ("malformed", [])),
    ("unsafe\nS12", ("malformed", [])),     # outside the taxonomy
    ("unsafe\nS0", ("malformed", [])),
    ("unsafe\nS1,S1", ("malformed", [])),
    ("unsafe\nviolence", ("malformed", [])),
    ("unsafe\nS1\nS2", ("malformed", [])),
    ("safe\nS1", ("malformed", [])),
    ("Safe", ("malformed", [])),
    ("safely", ("malformed", [])),
    ("", ("malformed", [])),
    ("I cannot help with that.", ("malformed", [])),
])
def test_parse_every_answer_shape(text, expected):
    assert parse_output(text, LLAMA_GUARD_2) == expected


def test_target_text_round_trips():
    for answer in ([], ["S1"], ["S2", "S7"]):
        verdict, parsed = parse_output(target_text(answer), LLAMA_GUARD_2)
        assert parsed == answer and verdict == ("unsafe" if answer else "safe")


def test_conversation_of_text_and_bad_role():
    assert conversation_of("hi", "Agent") == [{"role": "assistant", "content": "hi"}]
    with pytest.raises(HerdError, match="role"):
        conversation_of("hi", "System")
    with pytest.raises(HerdError, match="message 0"):
        render_prompt([{"role": "system", "content": "x"}])


def test_an_untrained_model_is_malformed_never_safe(tok):
    model = build_model(ModelConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=tok.n_words,
                                    multiple_of=32, ffn_dim_multiplier=None, max_seq_len=1024))
    model.init_weights(0)
    verdicts = LlamaGuard(model, tok, max_new_tokens=6).moderate(CONVERSATIONS[:1], LLAMA_GUARD_2[:2])
    for v in verdicts:
        assert v.verdict == "malformed" and 0.0 <= v.unsafe_prob <= 1.0 and v.format_prob < 0.5
    assert LLAMA_GUARD_2[0].name == "Violent Crimes" and len(LLAMA_GUARD_2) == 11
