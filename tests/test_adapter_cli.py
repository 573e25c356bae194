"""--lora and --embedding on the command line (generate, sweep, i2p) and in YAML, in process on the tiny model:
the images are the library's, and every record lists each adapter with its scale or token and its file hash."""
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import sld
from models.adapter_keys import adapter_targets
from models.sd1 import TINY_SD1
from reference import meta_state_dict
from sld.cli.main import main
from sld.io.records import PARAMETERS_KEY, read_record

FAST = ["--steps", "2", "--height", "64", "--width", "64", "--seed", "3"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def files(tmp_path):
    """A kohya LoRA over the tiny model's cross-attention keys and values, and a two-vector embedding."""
    shapes = {k: v.shape for k, v in meta_state_dict(TINY_SD1).items()}
    targets = {name: t for name, t in adapter_targets(TINY_SD1, shapes).items()
               if name.startswith("lora_unet_") and name.endswith(("attn2_to_k", "attn2_to_v"))}
    generator, tensors = torch.Generator().manual_seed(0), {}
    for name, target in targets.items():
        out, inp = shapes[target.key]
        tensors[f"{name}.lora_down.weight"] = torch.randn(4, inp, generator=generator) / inp ** 0.5
        tensors[f"{name}.lora_up.weight"] = torch.randn(out, 4, generator=generator)
    save_file(tensors, tmp_path / "style.safetensors")
    save_file({"emb_params": torch.randn(2, 128, generator=generator) / 4}, tmp_path / "sldthing.safetensors")
    return tmp_path / "style.safetensors", tmp_path / "sldthing.safetensors"


def short_hash(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def only_png(folder):
    [path] = sorted(folder.glob("*.png"))
    return path


def test_generate_records_adapters_and_draws_the_library_image(files, tmp_path):
    lora, embedding = files
    prompt = "a sldthing on a table"
    assert main(["generate", "--model", "tiny", "--lora", f"{lora}:0.5", "--embedding", str(embedding), "--prompt",
                 prompt, "--preset", "none", "--sampler", "ddim", *FAST, "--out", str(tmp_path / "out")]) == 0
    path = only_png(tmp_path / "out")
    model = read_record(path)["model"]
    assert model["loras"] == [{"name": "style.safetensors", "hash": short_hash(lora), "scale": 0.5}]
    assert model["embeddings"] == [{"name": "sldthing.safetensors", "hash": short_hash(embedding), "token": "sldthing"}]
    parameters = Image.open(path).text[PARAMETERS_KEY]
    assert f'Lora hashes: "style: {short_hash(lora)}"' in parameters and 'Lora scales: "style: 0.5"' in parameters
    assert f'TI hashes: "sldthing: {short_hash(embedding)}"' in parameters
    pipe = sld.load("tiny", loras=[(str(lora), 0.5)], embeddings=[str(embedding)])
    expected = pipe(prompt, height=64, width=64, steps=2, sampler="ddim", seed=3, safety=None).images[0]
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(expected))


def test_yaml_config_and_a_swept_lora_scale(files, tmp_path):
    lora, embedding = files
    config = tmp_path / "sweep.yaml"
    config.write_text(f"model:\n  path: tiny\n  embeddings: ['{embedding}:<thing>']\nprompt:\n  text: a <thing>\n"
                      f"sweep:\n  model.loras: [[], ['{lora}:0.5'], ['{lora}:1.0']]\n")
    assert main(["sweep", "--config", str(config), *FAST, "--out", str(tmp_path / "sweep")]) == 0
    images = [only_png(tmp_path / "sweep" / "runs" / f"{run:03d}") for run in range(3)]
    records = [read_record(path)["model"] for path in images]
    assert [[lora["scale"] for lora in r.get("loras", [])] for r in records] == [[], [0.5], [1.0]]
    assert all(r["embeddings"][0]["token"] == "<thing>" for r in records)
    pictures = [np.asarray(Image.open(path).convert("RGB"), dtype=float) for path in images]
    assert abs(pictures[1] - pictures[0]).mean() > 1 and abs(pictures[2] - pictures[1]).mean() > 1
    assert len(list((tmp_path / "sweep" / "sheets").glob("*.png"))) == 1
    assert "model.loras" in (tmp_path / "sweep" / "runs.csv").read_text().splitlines()[0]


def test_i2p_run_records_adapters(files, tmp_path):
    lora, _ = files
    assert main(["i2p", "generate", "--model", "tiny", "--lora", f"{lora}:0.7", "--categories", "sexual", "--sample",
                 "1", "--images-per-prompt", "1", "--height", "64", "--width", "64", "--steps", "2", "--settings",
                 "none", "--out", str(tmp_path / "i2p")]) == 0
    run = json.loads((tmp_path / "i2p" / "run.json").read_text())
    assert run["model"]["loras"] == [{"name": "style.safetensors", "hash": short_hash(lora), "scale": 0.7}]
    [image] = (tmp_path / "i2p" / "images").rglob("*.png")
    assert read_record(image)["model"]["loras"] == run["model"]["loras"]


@pytest.mark.parametrize("flags, message", [
    (["--lora", "missing.safetensors:0.5"], "--lora (model.loras) 'missing.safetensors': no such file; allowed: "
                                            "FILE[:SCALE]"),
    (["--embedding", "missing.pt:<x>"], "--embedding (model.embeddings) 'missing.pt': no such file; allowed: "
                                        "FILE[:TOKEN]"),
])
def test_missing_adapter_files_are_one_line(tmp_path, capsys, flags, message):
    assert main(["generate", "--model", "tiny", "--prompt", "a cat", *FAST, *flags, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err, err


def test_a_lora_for_another_model_is_one_line(tmp_path, capsys):
    save_file({"lora_unet_down_blocks_7_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_7_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)},
              tmp_path / "other.safetensors")
    assert main(["generate", "--model", "tiny", "--prompt", "a cat", *FAST, "--lora",
                 str(tmp_path / "other.safetensors"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "other.safetensors: LoRA modules that match nothing in the model" in err
    assert not list((tmp_path / "out").glob("*.png"))


def test_compare_grid_records_adapters(files, tmp_path):
    lora, embedding = files
    assert main(["compare", "--model", "tiny", "--lora", str(lora), "--embedding", f"{embedding}:<thing>", "--prompt",
                 "a <thing>", "--settings", "none,medium", *FAST, "--out", str(tmp_path / "grid")]) == 0
    model = read_record(only_png(tmp_path / "grid"))["model"]
    assert model["loras"] == [{"name": "style.safetensors", "hash": short_hash(lora), "scale": 1.0}]
    assert model["embeddings"][0]["token"] == "<thing>"
