"""Test-only reference: the FID Inception modules of torch-fidelity 0.4.0 (Apache-2.0, LICENSE.md), the files
listed in tests/vendor/README.md, byte for byte. This file replaces the package's own __init__, which imports
torchvision; nothing else of the package is here."""
