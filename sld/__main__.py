"""`python -m sld`: the same command as the `sld` console script."""
import sys

from sld.cli.main import main

sys.exit(main())
