"""The I2P benchmark (Schramowski et al., CVPR 2023, Sec. 4): prompts, resumable and sharded generation, plug-in
classifiers, metrics and reports. Entry points: `sld i2p ...` and `python -m sld.eval ...` (sld/eval/cli.py)."""
