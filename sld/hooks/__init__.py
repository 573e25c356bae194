"""Guidance hooks: SLD and its presets (safety.py), SEGA (sega.py), and the one resolver that turns any safety
setting into hooks, a negative prompt, a label and a record (resolve.py)."""
