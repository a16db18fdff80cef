"""Each data filter's thresholds on crafted documents: the kept ones pass, the others fail with their reason code."""

import pytest

from herd.data.document import Document
from herd.data.langid import LanguageFilter, heuristic_language
from herd.data.normalize import Normalize
from herd.data.pii import PIIMask
from herd.data.quality import C4Quality, FineWebQuality, GopherQuality, GopherRepetition
from herd.data.safety_words import BadWordsFilter

PROSE = (
    "The old lighthouse stood at the edge of the harbour for more than a century.\n"
    "Fishermen relied on its beam to guide them home through storms and fog, and the keeper kept a careful log.\n"
    "Each evening he climbed the narrow stairs with a can of oil and a cloth to polish the great lens.\n"
    "When electricity finally reached the village, the keeper was told that his work would no longer be needed.\n"
    "He stayed anyway, and the townspeople say that the light has never failed since that winter.\n"
    "Visitors still come to read his notes, which describe the weather, the ships and the birds with great care."
)


def doc(text: str) -> Document:
    return Document(text=text, id="t")


def reason(stage, text: str) -> str | None:
    return stage.apply(doc(text))


def test_prose_passes_every_quality_filter():
    for stage in (GopherQuality(), GopherRepetition(), FineWebQuality(), C4Quality(), BadWordsFilter()):
        stage.setup()
        assert reason(stage, PROSE) is None, stage.name


@pytest.mark.parametrize(
    "text, expected",
    [
        ("the cat and the dog " * 5, "gopher_short_doc"),
        (" ".join(["extraordinarily"] * 50 + ["the", "and"] * 5), "gopher_long_words"),
        (" ".join(["a", "b", "to", "of"] * 20), "gopher_short_words"),
        (PROSE + " #tag" * 20, "gopher_hash_ratio"),
        (PROSE + "..." * 12, "gopher_ellipsis_ratio"),
        ("\n".join(f"- item number {i} of the list and more words" for i in range(20)), "gopher_bullet_lines"),
        (
            "\n".join(f"and so the story of the long road went on and on to the sea with {i}..." for i in range(20)),
            "gopher_ellipsis_lines",
        ),
        (PROSE + " 123 456 789 000" * 20, "gopher_alpha_words"),
        (" ".join(f"word{i} lorem{i} ipsum{i}" for i in range(30)), "gopher_stop_words"),
    ],
)
def test_gopher_quality_reasons(text, expected):
    assert reason(GopherQuality(), text) == expected


def test_gopher_quality_threshold_is_configurable():
    short = "the cat and the dog " * 5  # 25 words
    assert reason(GopherQuality(min_words=20), short) is None
    assert reason(GopherQuality(min_words=26), short) == "gopher_short_doc"


def test_gopher_repetition_reasons():
    stage = GopherRepetition()
    lines = PROSE.split("\n")
    assert reason(stage, "\n\n".join(lines + lines[:3])) == "gopher_dup_para_frac"
    assert reason(stage, "\n".join(lines + lines[:3])) == "gopher_dup_line_frac"
    # One line repeated: 1 of 6 lines (under 30%) but more than 20% of the characters.
    long_line = " ".join(f"unique{i}" for i in range(60))
    assert reason(stage, f"{long_line}\n{long_line}\na b\nc d\ne f\ng h") == "gopher_dup_line_char_frac"
    # "red fox" covers about 30% of the characters: over the top 2-gram limit (20%), unique elsewhere.
    top2 = " ".join(f"red fox w{i}x{i}y{i}z" for i in range(40))
    assert reason(stage, top2) == "gopher_top_2gram"
    # A 12-word passage appearing twice in 100 unique words: duplicated 5-grams cover ~20% of characters.
    passage = " ".join(f"phrase{i}" for i in range(12))
    words = " ".join(f"filler{i}" for i in range(100))
    assert reason(stage, f"{passage} {words} {passage}") == "gopher_dup_5gram"
    assert reason(stage, f"{passage} {words}") is None


def test_dup_ngram_coverage_counts_overlaps_once():
    import numpy as np

    from herd.data.quality import _dup_ngram_chars  # the coverage ratio itself, against a hand count

    words = ["a", "b", "c", "a", "b", "c", "x"]
    hashes = np.array([hash(w) for w in words], dtype=np.int64).view(np.uint64)
    bigrams = hashes[:-1] * np.uint64(0x9E3779B97F4A7C15) + hashes[1:]
    lengths = np.ones(len(words), dtype=np.int64)
    # bigrams "a b" and "b c" repeat: they cover positions 0-2 and 3-5 -> 6 characters, "c a" and "c x" do not add.
    assert _dup_ngram_chars(bigrams, lengths, 2) == 6


def test_c4_rules():
    stage = C4Quality()
    assert reason(stage, PROSE + "\nLorem ipsum dolor sit amet, consectetur.") == "c4_lorem_ipsum"
    assert reason(stage, PROSE + "\nThe function is {return 1;} in code.") == "c4_curly_bracket"
    assert reason(stage, "One sentence here. Two sentences.\nThree more words here.") == "c4_too_few_sentences"
    d = doc(PROSE + "\nPlease enable JavaScript to view this page.\nMenu\nRead our privacy policy today.")
    assert stage.apply(d) is None
    assert d.text == PROSE  # javascript, policy and unpunctuated lines removed


def test_fineweb_rules():
    stage = FineWebQuality()
    assert reason(stage, "\n".join(f"a line without a stop number {i} here" for i in range(20))) == (
        "fineweb_line_punct_ratio"
    )
    assert (
        reason(stage, "\n".join(["Short one."] * 1 + [f"Tiny {i}." for i in range(10)])) == "fineweb_short_line_ratio"
    )
    assert reason(stage, PROSE + "\n" + PROSE.split("\n")[0]) == "fineweb_char_dup_ratio"
    listy = "\n".join(f"Item {i} is good and it is {i}." for i in range(10)).replace(" is good and it is", "\n")
    assert reason(FineWebQuality(max_short_line_ratio=1.0), listy) == "fineweb_list_ratio"


def test_bad_words_default_custom_and_tolerance(tmp_path):
    stage = BadWordsFilter()
    stage.setup()
    assert reason(stage, PROSE + " Free porn here.") == "bad_words"
    assert reason(stage, PROSE.replace("polish", "pornography-free polish")) == "bad_words"
    assert reason(stage, "A sporting chance for the xxxl shirt.") is None  # whole words only
    words = tmp_path / "words.txt"
    words.write_text("# my list\nlighthouse\n")
    custom = BadWordsFilter(words=[], word_files=[str(words)], max_matches=1)
    custom.setup()
    assert reason(custom, "the lighthouse") is None  # one match tolerated
    assert reason(custom, "the Lighthouse and the LIGHTHOUSE") == "bad_words"


def test_pii_masking():
    d = doc(
        "Mail jane.doe+news@example.co.uk or call +1 415-555-0134 or (212) 555-0199; server 192.168.0.1 and "
        "2001:db8::8a2e:370:7334. In 1999 we paid 3.50 for 12:30 shows, version 1.2.3.4.5 and 300.1.1.1 stay."
    )
    assert PIIMask().apply(d) is None
    assert d.text == (
        "Mail <EMAIL> or call <PHONE> or <PHONE>; server <IP> and "
        "<IP>. In 1999 we paid 3.50 for 12:30 shows, version 1.2.3.4.5 and 300.1.1.1 stay."
    )


def test_language_fallback_and_filter():
    assert heuristic_language(PROSE)[0] == "en"
    assert heuristic_language("Le chat est sur la table et il dort pour une heure dans le salon.")[0] == "fr"
    assert heuristic_language("Der Hund ist nicht im Haus, und die Katze schläft auf dem Sofa.")[0] == "de"
    assert heuristic_language("Собака спит на диване, а кошка сидит у окна.")[0] == "ru"
    assert heuristic_language("12345 !!! ???") == ("unknown", 0.0)
    stage = LanguageFilter(languages=["en"])
    english = doc(PROSE)
    assert stage.apply(english) is None and english.metadata["language"] == "en"
    assert reason(stage, "Le chat est sur la table et il dort pour une heure dans le salon.") == "language_other"


def test_language_fasttext_needs_model_path():
    from herd.errors import HerdError

    pytest.importorskip("fasttext", reason="fasttext not installed; the fallback is tested above")
    with pytest.raises(HerdError, match="model_path"):
        LanguageFilter(model_path="/nonexistent/lid.176.bin").setup()


def test_normalize():
    d = doc("  Ｆｕｌｌ　width\r\nline \t with   spaces \n\n\n\n\nnext\u200b para  ")
    assert Normalize(form="NFKC").apply(d) is None
    assert d.text == "Full width\nline with spaces\n\n\nnext para"
    assert reason(Normalize(), " \n\t ") == "empty_after_normalize"


def test_token_kl_drops_token_soup():
    import random

    from herd.data.outliers import TokenKLFilter
    from herd.data.stage import StageContext
    from herd.data.stats import StageStats

    rng = random.Random(0)
    sentences = PROSE.split("\n")
    prose = [Document(text=" ".join(rng.sample(sentences, 5)), id=f"p{i}") for i in range(40)]
    soup = Document(text=" ".join(f"{rng.getrandbits(64):016x}" for _ in range(60)), id="hex")
    stage = TokenKLFilter(max_kl=1.5, min_tokens=50)  # on this tiny corpus the soup is 13% of all tokens
    stage.decision = stage.decide([stage.index(iter(prose + [soup]))])[0]
    stats = StageStats(stage.name)
    kept = [d.id for d in stage.process(iter(prose + [soup]), StageContext(stats=stats))]
    assert kept == [d.id for d in prose] and stats.dropped == {"token_kl_outlier": 1}
    assert max(d.metadata["token_kl"] for d in prose) < 1.0
    assert soup.metadata["token_kl"] > 2.0
