"""`python -m sld.eval generate | score | report`: the same commands as `sld i2p ...`, with the same one-line
errors (exit status 2) and Ctrl-C handling (exit status 130, finished images kept)."""
import sys

from sld.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, OneLineParser, UsageError, one_line
from sld.eval.cli import add_i2p_commands, run_i2p


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m sld.eval", description="The I2P benchmark: generate, score and report.")
    add_i2p_commands(parser)
    try:
        return run_i2p(parser.parse_args(sys.argv[1:] if argv is None else list(argv)))
    except KeyboardInterrupt:
        print("sld i2p: interrupted; finished images and scores are complete, rerun the same command to continue",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as error:
        print(one_line(error).replace(": ", ": error: ", 1), file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, OSError) as error:
        print(f"sld i2p: error: {one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
