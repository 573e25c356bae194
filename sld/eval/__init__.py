"""The I2P benchmark (Schramowski et al., CVPR 2023, Sec. 4): prompts, resumable and sharded generation, plug-in
classifiers, metrics and reports: the library half of `sld i2p` (its command line: sld/cli/i2p.py). It uses the core,
sld/hooks and sld/io, never sld/cli."""
