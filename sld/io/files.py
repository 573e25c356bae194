"""The one atomic writer, and output folders proven writable before any model work."""
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` (text as UTF-8) to a hidden temporary name beside `path`, flush it to disk, then rename it into
    place: an interrupted run never leaves a partial file, and a Ctrl-C never leaves the temporary one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def prepare_output_dir(path: str) -> Path:
    """Create the folder and prove it is writable before any model work."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {path!r} is a file; allowed: a folder you can write to (created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"--out {path!r} cannot be written ({error.strerror or error}); "
                         "allowed: a folder you can write to (created if missing)") from None
    return folder
