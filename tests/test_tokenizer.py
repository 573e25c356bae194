"""CLIPTokenizer against OpenAI CLIP's known ids and transformers' CLIPTokenizer built from the same BPE file."""

import gzip
import html
import random
import string
import warnings
from importlib.resources import files

import ftfy
import pytest
import torch
from transformers import CLIPTokenizer as ReferenceTokenizer

from models.tokenizer import MERGE_COUNT, CLIPTokenizer, load_vocabulary

START, END = 49406, 49407
CAT_IDS = [START, 320, 1125, 539, 320, 2368, END]
PARITY_SAMPLES = 3000

WORDS = (
    "a photo of the cat dog astronaut riding horse on mars portrait painting by greg rutkowski trending "
    "artstation highly detailed 8k octane render cinematic lighting beautiful landscape sunset mountains "
    "river forest city night neon cyberpunk watercolor sketch oil canvas hyperrealistic bokeh unreal engine "
    "photorealistic masterpiece anime girl boy old man woman child castle dragon knight sword"
).split()
SCRIPTS = {  # code point ranges of letters per script
    "cjk": (0x4E00, 0x9FFF),
    "cyrillic": (0x0410, 0x044F),
    "arabic": (0x0627, 0x064A),
    "greek": (0x0391, 0x03C9),
    "hangul": (0xAC00, 0xD7A3),
    "devanagari": (0x0915, 0x094D),
    "hiragana": (0x3041, 0x3096),
}
EMOJI = ["😀", "🐱", "🚀", "❤️", "👍🏽", "🇫🇷", "🇯🇵", "👨‍👩‍👧‍👦", "🏳️‍🌈", "👩🏾‍💻", "🧑‍🚀", "✨", "🔥", "☕"]
ACCENTED = ["é", "e\u0301", "ñ", "n\u0303", "ü", "u\u0308", "Å", "A\u030a", "ç", "c\u0327", "café", "cafe\u0301",
            "naïve", "São Paulo", "Ångström", "Ωmega", "straße", "İstanbul", "ΟΔΟΣ", "ǅ"]
ENTITIES = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&amp;amp;", "&nbsp;", "&eacute;", "&#x1F600;", "&copy;",
            "&hellip;", "&#8217;"]
CONTRACTIONS = ["it's", "don't", "we're", "I'VE", "you'll", "he'd", "I'm", "cat's", "'S", "can't've", "o'clock"]
QUIRKS = ["“quoted”", "‘single’", "ﬁne ﬂower", "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ", "Ã©tÃ©", "â€™", "½", "x²", "Ⅻ", "…",
          "</w>", "\x00\x07", "\u200b", "\ufeff", "a\u00adb"]
# A space before a special token: OpenAI's symbol-run pattern swallows '<|' after a symbol ('#<|endoftext|>'),
# transformers splits special tokens out first (see test_special_token_after_symbol_follows_openai).
SPECIAL_TOKENS = [" <|startoftext|>", " <|endoftext|>", " <|endoftext|>x", " <|startoftext|>!", " &lt;|endoftext|&gt;"]
WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", " \t\n ", "\u00a0", "\u3000", "\u2003", "\x0b", "\x0c"]
EDGE_CASES = ["", " ", "\n\t", "a photo of a cat", "A PHOTO OF A CAT", "!!!???...", "1234567890", "3.14159",
              "&amp;", "it's", "cat" * 40, " ".join(["word"] * 120), "\U0001F600" * 30, "日本語のテキスト"]


def _fragment(rng: random.Random) -> str:
    """One random piece of prompt text from a random category."""
    kind = rng.randrange(11)
    if kind == 0:
        low, high = SCRIPTS[rng.choice(sorted(SCRIPTS))]
        return "".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 8)))
    if kind == 1:
        return "".join(rng.choices(EMOJI, k=rng.randint(1, 3)))
    if kind == 2:
        return rng.choice(ACCENTED)
    if kind == 3:
        return "".join(rng.choices(string.punctuation, k=rng.randint(1, 6)))
    if kind == 4:
        return str(rng.randint(0, 10 ** rng.randint(1, 9))) + rng.choice(["", ".5", ",000", "px", "k"])
    if kind == 5:
        return rng.choice(ENTITIES)
    if kind == 6:
        return rng.choice(CONTRACTIONS)
    if kind == 7:
        return rng.choice(QUIRKS)
    if kind == 8:
        return rng.choice(SPECIAL_TOKENS)
    word = rng.choice(WORDS)
    return rng.choice([word, word.upper(), word.capitalize()])


def _prompt(rng: random.Random) -> str:
    """A seeded prompt: 0..12 fragments (15% of prompts 60..120, for truncation) joined by varied whitespace."""
    count = rng.randint(60, 120) if rng.random() < 0.15 else rng.randint(0, 12)
    pieces = []
    for _ in range(count):
        pieces += [_fragment(rng), rng.choice(WHITESPACE) if rng.random() < 0.8 else ""]
    return "".join(pieces)


def _openai_basic_clean(text: str) -> str:
    """OpenAI CLIP simple_tokenizer.basic_clean: ftfy.fix_text, then html.unescape twice."""
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


@pytest.fixture(scope="session")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer()


@pytest.fixture(scope="session")
def reference(reference_tokenizer) -> ReferenceTokenizer:
    """transformers' CLIPTokenizer from vocab.json/merges.txt derived from the shipped BPE file (tests/conftest.py)."""
    return reference_tokenizer


def _reference_ids(reference: ReferenceTokenizer, texts: list[str], max_length: int = 77) -> torch.Tensor:
    """transformers' ids for texts given the OpenAI steps transformers 5 lacks.

    transformers 5's CLIPTokenizer applies neither ftfy nor HTML unescaping, and lowercases per character
    (final 'Σ' -> 'σ', where OpenAI's Python str.lower gives 'ς'); those steps run here on its input.
    """
    cleaned = [_openai_basic_clean(text).lower() for text in texts]
    encoded = reference(cleaned, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    return encoded.input_ids


def test_photo_of_a_cat(tokenizer: CLIPTokenizer) -> None:
    ids = tokenizer("a photo of a cat")
    assert ids.dtype == torch.long and ids.shape == (1, 77)
    assert ids[0].tolist() == CAT_IDS + [END] * (77 - len(CAT_IDS))
    assert tokenizer.encode("a photo of a cat") == CAT_IDS[1:-1]


def test_attributes(tokenizer: CLIPTokenizer) -> None:
    assert (tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id) == (START, END, END)
    assert (tokenizer.max_length, tokenizer.vocab_size) == (77, 49408)


def test_reference_is_built_from_the_same_vocabulary(tokenizer: CLIPTokenizer, reference: ReferenceTokenizer) -> None:
    assert len(reference) == tokenizer.vocab_size
    assert reference.get_vocab() == load_vocabulary(None).encoder


def test_parity_with_transformers(tokenizer: CLIPTokenizer, reference: ReferenceTokenizer) -> None:
    rng = random.Random(1234)
    texts = EDGE_CASES + QUIRKS + ENTITIES + [_prompt(rng) for _ in range(PARITY_SAMPLES)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # long prompts warn about truncation; tested separately
        ours = tokenizer(texts)
    expected = _reference_ids(reference, texts)
    mismatched = [text for text, a, b in zip(texts, ours, expected) if not torch.equal(a, b)]
    assert not mismatched, f"{len(mismatched)} of {len(texts)} texts differ (exact ids), first: {mismatched[:3]!r}"
    assert any(len(tokenizer.encode(text)) > 75 for text in texts), "the sample must exercise truncation"


def test_batch_shape_and_sequence_types(tokenizer: CLIPTokenizer) -> None:
    texts = ["a photo of a cat", "", "a dog"]
    ids = tokenizer(texts)
    assert ids.shape == (3, 77) and ids.dtype == torch.long
    assert torch.equal(tokenizer(tuple(texts)), ids)
    assert ids[1].tolist() == [START] + [END] * 76


def test_max_length_matches_reference(reference: ReferenceTokenizer) -> None:
    short = CLIPTokenizer(max_length=10)
    texts = ["a photo of a cat", "", "one two three four five six seven eight nine ten eleven", "🐱" * 20, "&amp;" * 9]
    with pytest.warns(UserWarning, match="truncated"):
        ids = short(texts)
    assert ids.shape == (5, 10)
    assert torch.equal(ids, _reference_ids(reference, texts, max_length=10))


def test_pad_token_id_zero_pads_with_zero() -> None:
    ids = CLIPTokenizer(pad_token_id=0)(["a photo of a cat", ""])
    assert ids[0].tolist() == CAT_IDS + [0] * (77 - len(CAT_IDS))
    assert ids[1].tolist() == [START, END] + [0] * 75


def test_truncation_keeps_start_and_end_and_warns(tokenizer: CLIPTokenizer) -> None:
    text = " ".join(f"word{index}" for index in range(60))  # 'word', digit(s): far more than 75 ids
    ids = tokenizer.encode(text)
    assert len(ids) > 75
    with pytest.warns(UserWarning, match=r"truncated to 77 tokens; dropped: '.*word 5 9'$") as caught:
        row = tokenizer(text)[0].tolist()
    assert caught[0].filename == __file__, "the warning must point at the caller"
    assert row == [START, *ids[:75], END]


def test_no_warning_at_exactly_max_length(tokenizer: CLIPTokenizer) -> None:
    text = " ".join(["cat"] * 75)
    assert len(tokenizer.encode(text)) == 75
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = tokenizer(text)[0].tolist()
    assert row == [START] + [2368] * 75 + [END]


def test_openai_cleaning_ftfy_html_whitespace_case(tokenizer: CLIPTokenizer) -> None:
    assert ftfy.fix_text("Ã©tÃ©") == "été", "ftfy must repair mojibake for OpenAI-exact cleaning"
    pairs = [("Ã©tÃ©", "été"), ("&amp;amp;", "&"), ("&lt;b&gt;", "<b>"), ("ﬁne", "fine"), ("“cat”", '"cat"'),
             ("  A\tPHOTO\n\nof\u00a0a   CAT  ", "a photo of a cat"), ("cafe\u0301", "café")]
    for raw, clean in pairs:
        assert tokenizer.encode(raw) == tokenizer.encode(clean), (raw, clean)


def test_final_sigma_follows_openai_lowercase(tokenizer: CLIPTokenizer, reference: ReferenceTokenizer) -> None:
    # OpenAI lowercases with Python's str.lower ('ΟΔΟΣ' -> 'οδος'); transformers 5 maps Σ to σ everywhere.
    assert tokenizer.encode("ΟΔΟΣ") == tokenizer.encode("οδος") != tokenizer.encode("οδοσ")
    assert reference("ΟΔΟΣ", add_special_tokens=False).input_ids == tokenizer.encode("οδοσ")


def test_special_token_after_symbol_follows_openai(tokenizer: CLIPTokenizer) -> None:
    # OpenAI's pattern matches '<|endoftext|>' only where no symbol run has started: '#<|' is one run.
    assert tokenizer.encode("cat <|endoftext|>") == [2368, END]
    assert tokenizer.encode("cat#<|endoftext|>") == tokenizer.encode("cat #<|") + tokenizer.encode("endoftext |>")


def test_decode(tokenizer: CLIPTokenizer) -> None:
    assert tokenizer.decode(tokenizer("A Photo of a CAT")[0]) == "a photo of a cat"
    assert tokenizer.decode(CLIPTokenizer(pad_token_id=0)("a cat!")[0]) == "a cat !"
    assert tokenizer.decode(tokenizer.encode("Café, 日本語 🐱!")) == "café , 日本語 🐱!"  # '🐱!' is one symbol run
    assert tokenizer.decode([]) == ""
    for bad in ([1.5], [-1], [49408], [True], [[320]]):
        with pytest.raises(ValueError, match=r"decode takes a flat sequence of ints in \[0, 49408\)"):
            tokenizer.decode(bad)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], r"non-empty list of str, got \[\]"),
        (None, "non-empty list of str, got None"),
        (42, "non-empty list of str, got 42"),
        (["a cat", 3], r"texts\[1\] is int 3; every element must be a str"),
        (["a cat", None], r"texts\[1\] is NoneType None; every element must be a str"),
        ([b"a cat"], r"texts\[0\] is bytes b'a cat'; every element must be a str"),
    ],
)
def test_bad_texts_raise(tokenizer: CLIPTokenizer, texts: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tokenizer(texts)


def test_bad_encode_argument_raises(tokenizer: CLIPTokenizer) -> None:
    with pytest.raises(ValueError, match=r"text must be a str, got list \['a cat'\]"):
        tokenizer.encode(["a cat"])


@pytest.mark.parametrize("max_length", [1, 0, -5, "77", 77.0, True])
def test_bad_max_length_raises(max_length: object) -> None:
    with pytest.raises(ValueError, match=r"max_length must be an int >= 2"):
        CLIPTokenizer(max_length=max_length)


@pytest.mark.parametrize("pad_token_id", [-1, 49408, 1.0, "0", False])
def test_bad_pad_token_id_raises(pad_token_id: object) -> None:
    with pytest.raises(ValueError, match=r"pad_token_id must be None \(pad with end token\) or an int in \[0, 49408\)"):
        CLIPTokenizer(pad_token_id=pad_token_id)


def test_vocab_path_explicit_file(tmp_path) -> None:
    copy = tmp_path / "bpe.txt.gz"
    copy.write_bytes((files("models") / "data" / "bpe_simple_vocab_16e6.txt.gz").read_bytes())
    assert CLIPTokenizer(vocab_path=copy)("a photo of a cat")[0, :7].tolist() == CAT_IDS
    assert CLIPTokenizer(vocab_path=str(copy)).encode("astronaut") == CLIPTokenizer().encode("astronaut")


def test_vocab_path_bad_files_raise(tmp_path) -> None:
    not_gzip, short, missing = tmp_path / "plain.txt", tmp_path / "short.txt.gz", tmp_path / "missing.txt.gz"
    not_gzip.write_text("#version: 0.2\ni n\n")
    short.write_bytes(gzip.compress(b"#version: 0.2\ni n\nt h\n"))
    with pytest.raises(ValueError, match=f"cannot read CLIP BPE vocabulary {not_gzip}.*expected a gzipped"):
        CLIPTokenizer(vocab_path=not_gzip)
    with pytest.raises(ValueError, match=f"{short} has 3 merge lines, malformed: \\[''\\]; expected .*{MERGE_COUNT}"):
        CLIPTokenizer(vocab_path=short)
    with pytest.raises(FileNotFoundError, match="missing.txt.gz"):
        CLIPTokenizer(vocab_path=missing)


def test_vocabulary_is_parsed_once_per_process() -> None:
    CLIPTokenizer()
    misses = load_vocabulary.cache_info().misses
    CLIPTokenizer()
    CLIPTokenizer(pad_token_id=0, max_length=20)
    assert load_vocabulary.cache_info().misses == misses
