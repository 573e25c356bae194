"""The I2P prompt table (Schramowski et al., CVPR 2023, Sec. 4) as users export it: CSV or parquet with the dataset's
columns, one prompt per row; the row's position in the file is its stable index.

Each row carries what the paper generated it with: `sd_seed`, `sd_guidance_scale`, `sd_image_width`,
`sd_image_height` (10 images per prompt from the row's seed). `categories` is a comma-separated list of the seven
categories. The package ships a small benign sample with the same columns (`sample_prompts_path()`; its category
labels exist to exercise grouping and filters, the prompts themselves are harmless) and the toy I2P table
(`--prompts toy`, sld/eval/toy_i2p.py: prompts the toy model knows, categories implicit, explicit and benign).
"""
import csv
import math
import random
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from sld.options import MAX_SEED

COLUMNS = ("prompt", "categories", "hard", "inappropriate_percentage", "nudity_percentage", "q16_percentage",
           "sd_safety_percentage", "prompt_toxicity", "lexica_url", "sd_seed", "sd_guidance_scale", "sd_image_width",
           "sd_image_height")
CATEGORIES = ("hate", "harassment", "violence", "self-harm", "sexual", "shocking", "illegal activity")
FULL_DATASET_ROWS = 4703  # the published I2P table
PARQUET_SUFFIXES = (".parquet", ".pq")
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes"), ("0", "false", "no")


@dataclass(frozen=True)
class PromptRow:
    index: int  # position in the file (0-based): part of every work item's id
    prompt: str
    categories: tuple[str, ...]
    hard: bool
    seed: int
    guidance: float
    width: int
    height: int

    def to_json(self) -> dict:
        return {"index": self.index, "prompt": self.prompt, "categories": list(self.categories), "hard": self.hard,
                "seed": self.seed, "guidance": self.guidance, "width": self.width, "height": self.height}

    @classmethod
    def from_json(cls, data: dict) -> "PromptRow":
        return cls(**{**data, "categories": tuple(data["categories"])})


TOY_TABLE = "toy"  # the name --prompts takes for the shipped toy I2P table


def sample_prompts_path() -> Path:
    """The shipped benign sample (12 rows, the dataset's columns)."""
    return Path(str(files("sld") / "data" / "i2p_sample.csv"))


def prompts_path(file: str | None) -> Path:
    """The table `prompts.file` names: None -> the benign sample, "toy" -> the toy I2P table, else the file."""
    if file is None:
        return sample_prompts_path()
    return Path(str(files("sld") / "data" / "toy_i2p.csv")) if file == TOY_TABLE else Path(file)


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            return list(reader.fieldnames or []), list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ValueError(f"prompts file {str(path)!r} cannot be read ({reason}); allowed: a UTF-8 CSV or a parquet "
                         f"file with the I2P columns") from None


def _read_parquet(path: Path) -> tuple[list[str], list[dict]]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise ValueError(f"prompts file {str(path)!r} is parquet, which needs pyarrow: pip install pyarrow "
                         "(or export the table as CSV)") from None
    try:
        table = parquet.read_table(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"prompts file {str(path)!r} cannot be read as parquet ({error})") from None
    return list(table.column_names), table.to_pylist()


def _missing(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value))


def _integer(value) -> int:
    """An int, or text of one ("123", or "123.0" as float columns export), exact beyond 2**53."""
    if isinstance(value, int):
        return int(value)
    text = str(value).strip()
    if text.lstrip("+-").isdigit():
        return int(text)
    number = float(text)
    if not number.is_integer():
        raise ValueError
    return int(number)


def _boolean(value) -> bool:
    word = str(value).strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    return bool(_integer(value))


def _field(raw: dict, column: str, parse, allowed: str, where: str):
    value = raw.get(column)
    try:
        if _missing(value):
            raise ValueError
        return parse(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {column}={value!r} is invalid; allowed: {allowed}") from None


def _categories(value) -> tuple[str, ...]:
    labels = tuple(label.strip().lower() for label in str(value).split(",") if label.strip())
    if not labels:
        raise ValueError
    return labels


def _text(value) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError
    return text


def _non_negative(value) -> float:
    number = float(value)
    if not number >= 0:  # NaN fails too
        raise ValueError
    return number


def _seed(value) -> int:
    seed = _integer(value)
    if not 0 <= seed <= MAX_SEED:
        raise ValueError
    return seed


def _positive(parse):
    def checked(value):
        number = parse(value)
        if number <= 0:
            raise ValueError
        return number
    return checked


def _row(index: int, raw: dict, source: str) -> PromptRow:
    where = f"{source}, row {index} (0-based, after the header)"
    return PromptRow(
        index=index,
        prompt=_field(raw, "prompt", _text, "a non-empty string", where),
        categories=_field(raw, "categories", _categories, "comma-separated category names", where),
        hard=_field(raw, "hard", _boolean, "0 or 1", where),
        seed=_field(raw, "sd_seed", _seed, f"an integer in 0..{MAX_SEED}", where),
        guidance=_field(raw, "sd_guidance_scale", _non_negative, "a number >= 0", where),
        width=_field(raw, "sd_image_width", _positive(_integer), "a positive integer", where),
        height=_field(raw, "sd_image_height", _positive(_integer), "a positive integer", where),
    )


def read_prompts(path: str | Path) -> list[PromptRow]:
    """Every row of an I2P table (CSV, or parquet when pyarrow is installed); extra columns are ignored."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompts file {str(path)!r}: no such file; allowed: a CSV or parquet file with the I2P "
                         f"columns ({', '.join(COLUMNS)})")
    names, raws = _read_parquet(path) if path.suffix.lower() in PARQUET_SUFFIXES else _read_csv(path)
    missing = [column for column in COLUMNS if column not in names]
    if missing:
        raise ValueError(f"prompts file {str(path)!r} lacks the column(s) {', '.join(missing)}; "
                         f"the I2P columns are {', '.join(COLUMNS)}")
    if not raws:
        raise ValueError(f"prompts file {str(path)!r} has no rows")
    return [_row(index, raw, str(path)) for index, raw in enumerate(raws)]


def check_categories(categories: list[str], rows: list[PromptRow]) -> None:
    """Each category is one of I2P's seven or a label the table uses (the toy table's "implicit", ...)."""
    known = list(dict.fromkeys([*CATEGORIES, *(label for row in rows for label in row.categories)]))
    unknown = [name for name in categories if name not in known]
    if unknown:
        raise ValueError(f"category {unknown[0]!r} is unknown; allowed: {', '.join(known)}")


def select_prompts(rows: list[PromptRow], categories: list[str] = (), hard: bool | None = None,
                   sample: int | None = None, sample_seed: int = 0) -> list[PromptRow]:
    """Rows in any of `categories` (all when empty), with `hard` as given (any when None), then a random sample of
    `sample` rows drawn with `sample_seed` (all when None), in file order."""
    check_categories(list(categories), rows)
    chosen = [row for row in rows if (not categories or set(row.categories) & set(categories))
              and (hard is None or row.hard == hard)]
    if sample is not None:
        if not 1 <= sample <= len(chosen):
            raise ValueError(f"sample={sample} is invalid; allowed: 1..{len(chosen)} (the prompts left after the "
                             f"category and hard filters), or null for all")
        chosen = sorted(random.Random(sample_seed).sample(chosen, sample), key=lambda row: row.index)
    if not chosen:
        raise ValueError("no prompt matches the filters (categories, hard); allowed: filters that keep one row or more")
    return chosen
