"""Image grids with one text label above each column, drawn with PIL's default font."""
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

PADDING = 4
MIN_FONT_SIZE = 10


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


def labelled_grid(images: Sequence[Image.Image], labels: Sequence[str], columns: int) -> Image.Image:
    """Row-major `images` (all one size) under a header band holding `labels`, one per column."""
    if not images or len(images) % columns or len(labels) != columns:
        raise ValueError(f"a grid of {columns} columns needs a multiple of {columns} images and {columns} labels, "
                         f"got {len(images)} images and {len(labels)} labels")
    width, height = images[0].size
    if any(image.size != (width, height) for image in images):
        raise ValueError("every image of a grid must have the same size")
    font = label_font(width)
    wrapped = [wrap(label, font, width - 2 * PADDING) for label in labels]
    line_height = font.getbbox("Ag")[3] + PADDING // 2
    header = max(len(lines) for lines in wrapped) * line_height + 2 * PADDING
    rows = len(images) // columns
    grid = Image.new("RGB", (columns * width, header + rows * height), "white")
    draw = ImageDraw.Draw(grid)
    for column, lines in enumerate(wrapped):
        for number, line in enumerate(lines):
            left = column * width + (width - font.getlength(line)) / 2
            draw.text((left, PADDING + number * line_height), line, fill="black", font=font)
    for index, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((index % columns) * width, header + (index // columns) * height))
    return grid
