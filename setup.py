from setuptools import setup

setup(
    name="safe-latent-diffusion",
    version="0.1.0",
    description="From-scratch Safe Latent Diffusion (SLD) research toolkit for Stable Diffusion checkpoints",
    packages=["sld", "sld.hooks", "sld.io", "sld.cli", "sld.cli.sweep", "sld.eval", "sld.toy", "models", "sampling"],
    # the CLIP vocabulary, the toy model and its shape classifier, the I2P sample
    package_data={"models": ["data/*.txt.gz", "data/*.safetensors"], "sld": ["data/*.csv", "data/*.json", "data/*.safetensors"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1,<2.15",
        "safetensors>=0.4",
        "numpy>=1.24",
        "pillow>=10.1",  # ImageFont.load_default(size=...) for grid labels
        "omegaconf>=2.3",
        "tqdm>=4.60",
        "ftfy>=6.1",
        "regex>=2022.1",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "diffusers==0.42.1",
            "transformers==5.24.0",
            "peft==0.21.2",  # diffusers' load_lora_weights / fuse_lora, the LoRA reference (tests/test_lora.py)
            "nbclient>=0.9",
            "nbformat>=5.9",
            "ipykernel>=6",
            "matplotlib>=3.7",
            "lightning>=2.1",
            "scipy>=1.10",  # diffusers' LMSDiscreteScheduler, the LMS coefficient test, the Fréchet distance
            "pyarrow>=14",  # the I2P reader's parquet path
            "nudenet>=3.4,<4",  # the paper's nudity detector, run for real by the I2P scoring test (AGPL, tests only)
            "scikit-image>=0.22",  # structural_similarity, the SSIM reference (tests/test_ssim.py)
        ],
        # `sld i2p`: Lightning Fabric for --devices/--num-nodes above 1, matplotlib for report.png
        "i2p": ["lightning>=2.1", "matplotlib>=3.7"],
        # `sld coco`: the same, and scipy for the Fréchet distance's matrix square root
        "coco": ["lightning>=2.1", "matplotlib>=3.7", "scipy>=1.10"],
    },
    entry_points={"console_scripts": ["sld=sld.cli.main:main"]},
)
