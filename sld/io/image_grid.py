"""Image grids with one text label above each column and, optionally, one left of each row (PIL's default font)."""
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

PADDING = 4
MIN_FONT_SIZE = 10
MIN_ROW_LABEL_WIDTH = 160  # about 25 characters of the smallest font: "sampler.name=dpmpp_2m" on one line


def label_font(cell_width: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font, scaled with the cell (10 px at 64 px cells, 25 px at 512)."""
    return ImageFont.load_default(size=max(MIN_FONT_SIZE, cell_width // 20))


def wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels; a word wider than a line is split between characters."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = ""
        for char in word:
            if line and font.getlength(line + char) > width:
                lines.append(line)
                line = ""
            line += char
    return lines + [line] if line else lines


def row_label_width(cell_width: int) -> int:
    """Width of the row-label band: one cell, at least MIN_ROW_LABEL_WIDTH pixels."""
    return max(cell_width, MIN_ROW_LABEL_WIDTH)


def wrap_lines(text: str, font, width: int) -> list[str]:
    """`wrap` of each line of `text`: a label's own line breaks are kept."""
    return [line for part in text.split("\n") for line in wrap(part, font, width)]


def _check(images: Sequence[Image.Image], labels: Sequence[str], columns: int,
           row_labels: Sequence[str] | None) -> None:
    if not images or len(images) % columns or len(labels) != columns:
        raise ValueError(f"a grid of {columns} columns needs a multiple of {columns} images and {columns} labels, "
                         f"got {len(images)} images and {len(labels)} labels")
    if row_labels is not None and len(row_labels) != len(images) // columns:
        raise ValueError(f"a grid of {len(images) // columns} rows needs as many row labels, got {len(row_labels)}")
    if any(image.size != images[0].size for image in images):
        raise ValueError("every image of a grid must have the same size")


def labelled_grid(images: Sequence[Image.Image], labels: Sequence[str], columns: int,
                  row_labels: Sequence[str] | None = None) -> Image.Image:
    """Row-major `images` (all one size) under a header band holding `labels`, one per column; with `row_labels`,
    a band on the left (row_label_width) holds one label per row (lines that do not fit the row are dropped)."""
    _check(images, labels, columns, row_labels)
    width, height = images[0].size
    font = label_font(width)
    wrapped = [wrap_lines(label, font, width - 2 * PADDING) for label in labels]
    line_height = font.getbbox("Ag")[3] + PADDING // 2
    header = max(len(lines) for lines in wrapped) * line_height + 2 * PADDING
    left = row_label_width(width) if row_labels is not None else 0
    rows = len(images) // columns
    grid = Image.new("RGB", (left + columns * width, header + rows * height), "white")
    draw = ImageDraw.Draw(grid)
    for column, lines in enumerate(wrapped):
        for number, line in enumerate(lines):
            centred = left + column * width + (width - font.getlength(line)) / 2
            draw.text((centred, PADDING + number * line_height), line, fill="black", font=font)
    fitting = max(1, (height - 2 * PADDING) // line_height)
    for row, label in enumerate(row_labels or ()):
        for number, line in enumerate(wrap_lines(label, font, left - 2 * PADDING)[:fitting]):
            draw.text((PADDING, header + row * height + PADDING + number * line_height), line, fill="black", font=font)
    for index, image in enumerate(images):
        grid.paste(image.convert("RGB"), (left + (index % columns) * width, header + (index // columns) * height))
    return grid
