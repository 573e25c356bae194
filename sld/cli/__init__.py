"""The `sld` command (main.py): every flag once (flags.py), typed configs (config.py), and one module per
subcommand: generate, compare, info, sweep/, i2p (the evaluation's command line), toy-eval."""
