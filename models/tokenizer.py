"""CLIP byte-level BPE tokenizer: prompts -> LongTensor [B, max_length] of token ids.

Follows OpenAI CLIP's `clip/simple_tokenizer.py` (ftfy + HTML unescape, whitespace collapse,
lowercase, the same word pattern, byte-to-unicode symbols, BPE merges ranked by file order)
and its framing `start, ids, end, padding`, truncated the way transformers' `CLIPTokenizer`
truncates with `truncation=True`: the start token stays, ids are cut, the end token is kept.
"""

import functools
import gzip
import html
import reprlib
import warnings
import zlib
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

import ftfy
import regex
import torch

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
# OpenAI CLIP keeps the first 49152 - 256 - 2 merges of the file (vocabulary of 49408 tokens).
MERGE_COUNT = 49152 - 256 - 2
_BPE_CACHE_SIZE = 1 << 16

# OpenAI CLIP simple_tokenizer.py: special tokens, contractions, letter runs, single digits, symbol runs.
_WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable symbol; printable bytes map to themselves, the others to chr(256 + n)."""
    # GPT-2 / OpenAI CLIP bytes_to_unicode; insertion order (printable first) is the vocabulary order.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {byte: chr(byte) for byte in printable}
    unprintable = [byte for byte in range(256) if byte not in mapping]
    mapping.update({byte: chr(256 + offset) for offset, byte in enumerate(unprintable)})
    return mapping


def _read_merges(vocab_path: str | None) -> list[tuple[str, str]]:
    """The first MERGE_COUNT merge pairs of a gzipped BPE file (line 0 is a version header)."""
    source = files("models") / "data" / "bpe_simple_vocab_16e6.txt.gz" if vocab_path is None else Path(vocab_path)
    expected = f"a gzipped UTF-8 BPE merges file with a header line and at least {MERGE_COUNT} 'a b' lines"
    try:
        lines = gzip.decompress(source.read_bytes()).decode("utf-8").split("\n")
    except (gzip.BadGzipFile, EOFError, zlib.error, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read CLIP BPE vocabulary {source} ({error}); expected {expected}") from error
    merge_lines = lines[1 : MERGE_COUNT + 1]
    malformed = [line for line in merge_lines if line.count(" ") != 1]
    if len(merge_lines) < MERGE_COUNT or malformed:
        found = f"{len(merge_lines)} merge lines" + (f", malformed: {malformed[:3]!r}" if malformed else "")
        raise ValueError(f"CLIP BPE vocabulary {source} has {found}; expected {expected}")
    return [tuple(line.split(" ")) for line in merge_lines]


class Vocabulary(NamedTuple):
    """A parsed BPE file: token ids both ways and merge priorities."""

    encoder: dict[str, int]  # token -> id
    decoder: dict[int, str]  # id -> token
    ranks: dict[tuple[str, str], int]  # merge pair -> priority (lower merges first)


@functools.lru_cache(maxsize=4)
def load_vocabulary(vocab_path: str | None) -> Vocabulary:
    """The parsed BPE file, once per process and file; None is the file shipped in models/data."""
    merges = _read_merges(vocab_path)
    # OpenAI CLIP vocabulary order: byte symbols, byte symbols + '</w>', merged pairs, start, end.
    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(s + END_OF_WORD for s in symbols), *("".join(pair) for pair in merges)]
    tokens += [START_TOKEN, END_TOKEN]
    encoder = {token: index for index, token in enumerate(tokens)}
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    return Vocabulary(encoder, dict(enumerate(tokens)), ranks)


def clean_text(text: str) -> str:
    """OpenAI CLIP's text normalisation: ftfy, HTML unescape twice, whitespace collapse, lowercase."""
    # simple_tokenizer.py: whitespace_clean(basic_clean(text)).lower()
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def _merge_pair(parts: list[str], pair: tuple[str, str]) -> list[str]:
    """Replace every non-overlapping occurrence of `pair`, left to right, by its concatenation."""
    merged, index = [], 0
    while index < len(parts):
        if index + 1 < len(parts) and (parts[index], parts[index + 1]) == pair:
            merged.append(parts[index] + parts[index + 1])
            index += 2
        else:
            merged.append(parts[index])
            index += 1
    return merged


def _as_batch(texts: str | Sequence[str]) -> list[str]:
    """A single prompt becomes a batch of one; anything but a non-empty list of str is refused."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, (list, tuple)) or len(texts) == 0:
        raise ValueError(f"texts must be a str or a non-empty list of str, got {reprlib.repr(texts)}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(
                f"texts[{index}] is {type(text).__name__} {reprlib.repr(text)}; every element must be a str"
            )
    return list(texts)


class CLIPTokenizer:
    """OpenAI CLIP BPE tokenizer; `tokenizer(texts)` -> LongTensor [B, max_length].

    pad_token_id None pads with the end token (SD 1.x, transformers' CLIPTokenizer);
    Stable Diffusion 2.x (OpenCLIP) pads with 0. `added_tokens` (textual inversion, models/embeddings.py): a word ->
    the ids of its vectors; it is found anywhere in the cleaned (lowercased) text, as transformers matches added
    tokens, and the text around it is tokenized as usual.
    """

    def __init__(self, vocab_path: str | Path | None = None, max_length: int = 77, pad_token_id: int | None = None,
                 added_tokens: dict[str, Sequence[int]] | None = None):
        self._encoder, self._decoder, self._ranks = load_vocabulary(None if vocab_path is None else str(vocab_path))
        self._byte_decoder = {symbol: byte for byte, symbol in bytes_to_unicode().items()}
        self.vocab_size = len(self._encoder)
        self.start_token_id = self._encoder[START_TOKEN]
        self.end_token_id = self._encoder[END_TOKEN]
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an int >= 2 (room for start and end tokens), got {max_length!r}")
        self.max_length = max_length
        if pad_token_id is not None and not self._is_token_id(pad_token_id):
            raise ValueError(f"pad_token_id must be None (pad with end token) or an int in [0, {self.vocab_size}), "
                             f"got {pad_token_id!r}")
        self.pad_token_id = self.end_token_id if pad_token_id is None else pad_token_id
        self._word_ids = functools.lru_cache(maxsize=_BPE_CACHE_SIZE)(self._word_ids_uncached)
        self.added_tokens = {clean_text(word): tuple(ids) for word, ids in (added_tokens or {}).items()}
        longest_first = sorted(self.added_tokens, key=len, reverse=True)
        self._added_pattern = regex.compile("|".join(map(regex.escape, longest_first))) if longest_first else None

    def __call__(self, texts: str | Sequence[str]) -> torch.LongTensor:
        """[B, max_length]: start, BPE ids (truncated, with a warning), end, then pad ids."""
        rows = []
        for text in _as_batch(texts):  # a plain loop keeps the warning's stacklevel at the caller
            rows.append(self._frame(self.encode(text)))
        return torch.tensor(rows, dtype=torch.long)

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text`, without start and end tokens."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__} {reprlib.repr(text)}")
        cleaned, ids, start = clean_text(text), [], 0
        for found in self._added_pattern.finditer(cleaned) if self._added_pattern else ():
            ids.extend(self._bpe_ids(cleaned[start : found.start()]))
            ids.extend(self.added_tokens[found.group()])
            start = found.end()
        return ids + self._bpe_ids(cleaned[start:])

    def _bpe_ids(self, cleaned: str) -> list[int]:
        ids = []
        for word in _WORD_PATTERN.findall(cleaned):
            ids.extend(self._word_ids(word))
        return ids

    def knows(self, word: str) -> bool:
        """Whether `word` already means something: a vocabulary entry, or one cleaned word that BPE encodes as a single
        id ("cat", "sks"), or an added token. Textual-inversion tokens must not be such words."""
        cleaned = clean_text(word)
        return (word in self._encoder or cleaned in self.added_tokens
                or len(_WORD_PATTERN.findall(cleaned)) == 1 and len(self._bpe_ids(cleaned)) == 1)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of `ids`, skipping start tokens and stopping at the first end token (so padded rows decode); an added
        token's ids read as its word."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        added = {index: word if position == 0 else "" for word, word_ids in self.added_tokens.items()
                 for position, index in enumerate(word_ids)}
        invalid = [token for token in ids if not (self._is_token_id(token) or self._is_added_id(token, added))]
        if invalid:
            raise ValueError(f"decode takes a flat sequence of ints in [0, {self.vocab_size}) or added token ids, "
                             f"got {reprlib.repr(invalid)}")
        if self.end_token_id in ids:
            ids = ids[: ids.index(self.end_token_id)]
        pieces, run = [], []
        for token in ids:
            if token in added:
                pieces += [self._decode_bpe(run), added[token]]
                run = []
            elif token != self.start_token_id:
                run.append(token)
        return " ".join(piece for piece in [*pieces, self._decode_bpe(run)] if piece)

    def _decode_bpe(self, ids: list[int]) -> str:
        symbols = "".join(self._decoder[token] for token in ids)
        # OpenAI CLIP decode: symbols -> bytes -> UTF-8 (invalid sequences replaced), '</w>' -> space.
        text = bytes(self._byte_decoder[symbol] for symbol in symbols).decode("utf-8", errors="replace")
        return text.replace(END_OF_WORD, " ").strip()

    def _is_added_id(self, value: object, added: dict[int, str]) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value in added

    def _is_token_id(self, value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < self.vocab_size

    def _frame(self, ids: list[int]) -> list[int]:
        """start + ids + end, ids truncated to max_length - 2, padded to max_length."""
        room = self.max_length - 2
        if len(ids) > room:
            warnings.warn(f"prompt truncated to {self.max_length} tokens; dropped: {self.decode(ids[room:])!r}",
                          stacklevel=3)
            ids = ids[:room]
        row = [self.start_token_id, *ids, self.end_token_id]
        return row + [self.pad_token_id] * (self.max_length - len(row))

    def _word_ids_uncached(self, word: str) -> tuple[int, ...]:
        """Ids of one pre-tokenized word: special tokens as themselves, otherwise BPE over its UTF-8 bytes."""
        if word in (START_TOKEN, END_TOKEN):
            return (self._encoder[word],)
        byte_symbols = bytes_to_unicode()
        symbols = [byte_symbols[byte] for byte in word.encode("utf-8")]
        parts = symbols[:-1] + [symbols[-1] + END_OF_WORD]
        # OpenAI CLIP bpe(): repeatedly merge the adjacent pair with the lowest rank until none is ranked.
        while len(parts) > 1:
            pair = min(zip(parts, parts[1:]), key=lambda candidate: self._ranks.get(candidate, MERGE_COUNT))
            if pair not in self._ranks:
                break
            parts = _merge_pair(parts, pair)
        return tuple(self._encoder[part] for part in parts)
