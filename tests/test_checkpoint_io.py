"""Reading .safetensors and .ckpt files safely: formats, EMA selection, refusals, corrupt files."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import sys
import time
import types
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from models.checkpoint import (
    TRAINING_BUFFERS,
    CheckpointError,
    drop_training_buffers,
    format_keys,
    read_weight_file,
    select_weights,
)
from models.loader import read_checkpoint

LIGHTNING_MODULE = "pytorch_lightning.callbacks.model_checkpoint"
UNET_KEYS = (
    "model.diffusion_model.time_embed.0.weight",
    "model.diffusion_model.input_blocks.0.0.weight",
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
    "model.diffusion_model.out.2.bias",
)
OTHER_KEYS = (
    "first_stage_model.encoder.conv_in.weight",
    "first_stage_model.decoder.mid.attn_1.q.weight",
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
    "cond_stage_model.transformer.text_model.final_layer_norm.bias",
)


def _random_state(seed: int, keys=UNET_KEYS + OTHER_KEYS) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(4, 3, generator=generator) for key in keys}


def _ema_name(key: str) -> str:
    """CompVis LitEma: `model.diffusion_model.X` -> `model_ema.` + "diffusion_model.X" without dots."""
    return "model_ema." + key.removeprefix("model.").replace(".", "")


def _assert_same(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype and torch.equal(actual[key], tensor), key


def _mapped_files() -> str:
    with open("/proc/self/maps") as maps:
        return maps.read()


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return _random_state(0)


@pytest.fixture(scope="module")
def lightning_ckpt(state, tmp_path_factory):
    """A .ckpt as Lightning writes it: a ModelCheckpoint instance and numpy scalars beside the weights."""
    path = tmp_path_factory.mktemp("lightning") / "model.ckpt"
    module = types.ModuleType(LIGHTNING_MODULE)

    class ModelCheckpoint:
        def __init__(self):
            self.monitor = "val/loss"
            self.best_model_score = torch.tensor(0.25)
            self.kth_value = np.float64(0.5)

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = LIGHTNING_MODULE, "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    names = ("pytorch_lightning", "pytorch_lightning.callbacks", LIGHTNING_MODULE)
    sys.modules.update({name: module if name == LIGHTNING_MODULE else types.ModuleType(name) for name in names})
    try:
        payload = {"callbacks": {ModelCheckpoint: {"best": np.int32(1)}, "instance": ModelCheckpoint()}}
        torch.save({"state_dict": state, "global_step": 5, "epoch": np.int64(3), **payload}, path)
    finally:
        for name in names:
            del sys.modules[name]
    return path


def test_safetensors_round_trip_is_memory_mapped(state, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(state, path)
    loaded = read_checkpoint(path)
    _assert_same(loaded, state)
    if sys.platform.startswith("linux"):
        assert str(path) in _mapped_files(), "tensors should alias a memory map of the file, not a copy"


def test_half_precision_is_not_cast(state, tmp_path):
    path = tmp_path / "half.safetensors"
    half = {key: value.half() for key, value in state.items()}
    save_file(half, path)
    loaded = read_checkpoint(path)
    assert {tensor.dtype for tensor in loaded.values()} == {torch.float16}
    _assert_same(loaded, half)


def test_lightning_ckpt_loads_without_lightning(lightning_ckpt, state):
    assert "pytorch_lightning" not in sys.modules
    safe_globals_before = set(torch.serialization.get_safe_globals())
    loaded = read_checkpoint(lightning_ckpt)
    _assert_same(loaded, state)  # global_step, epoch and callbacks dropped
    assert set(torch.serialization.get_safe_globals()) == safe_globals_before, "global torch state changed"
    if sys.platform.startswith("linux"):
        assert str(lightning_ckpt) in _mapped_files(), "zip checkpoints should load with mmap=True"


def test_top_level_state_dict_and_legacy_format(state, tmp_path):
    """A bare dict of tensors, in torch's pre-1.6 (non-zip) format, where mmap cannot be used."""
    path = tmp_path / "legacy.pt"
    torch.save({**state, "global_step": 7}, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    _assert_same(read_checkpoint(path), state)


def test_ema_selection(state, tmp_path):
    ema_values = _random_state(1, UNET_KEYS)
    full = {**state, **{_ema_name(key): value for key, value in ema_values.items()}}
    full["model_ema.decay"] = torch.tensor(0.9999)
    full["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    path = tmp_path / "full-ema.ckpt"
    torch.save({"state_dict": full}, path)
    loaded = read_checkpoint(path)
    assert _ema_name(UNET_KEYS[0]) == "model_ema.diffusion_modeltime_embed0weight"
    _assert_same(select_weights(loaded, ema=False), state)
    _assert_same(select_weights(loaded, ema=True), {**state, **ema_values})


def test_ema_requested_without_ema_weights(state):
    with pytest.raises(CheckpointError, match="v1.ckpt: ema=True was requested but the file has no EMA weights"):
        select_weights({**state, "model_ema.decay": torch.tensor(0.9999)}, ema=True, source="v1.ckpt")
    partial = {**state, _ema_name(UNET_KEYS[0]): torch.zeros(4, 3)}
    with pytest.raises(CheckpointError, match="EMA weights incomplete.*input_blocks00weight"):
        select_weights(partial, ema=True)


class _Payload:
    """Pickles as a call of `function(*arguments)`: what a malicious checkpoint contains."""

    def __init__(self, function, arguments):
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


def _touch_command(marker) -> str:
    return f"open({str(marker)!r}, 'w').close()"


MALICIOUS = {
    "os.system": lambda marker: _Payload(os.system, (f'{sys.executable} -c "{_touch_command(marker)}"',)),
    "builtins.exec": lambda marker: _Payload(builtins.exec, (_touch_command(marker),)),
    "subprocess.Popen": lambda marker: _Payload(subprocess.Popen, ([sys.executable, "-c", _touch_command(marker)],)),
}
# What the refusal names: os.system pickles as posix.system (nt.system on Windows).
NAMED = {
    "os.system": f"{os.system.__module__}.system",
    "builtins.exec": "builtins.exec",
    "subprocess.Popen": "subprocess.Popen",
}


@pytest.mark.parametrize("global_name", sorted(MALICIOUS))
def test_malicious_ckpt_is_refused_and_never_runs(state, tmp_path, global_name):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": state, "payload": MALICIOUS[global_name](marker)}, path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert str(path) in message and f"'{NAMED[global_name]}'" in message
    assert "arbitrary code is refused" in message
    time.sleep(0.3 if global_name == "subprocess.Popen" else 0)  # a spawned process would need a moment
    assert not marker.exists()


def test_malicious_payload_is_live(state, tmp_path):
    """The payloads above do run under an unsafe loader, so the refusal test is not vacuous."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"payload": MALICIOUS["builtins.exec"](marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
def test_protocol_4_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "raw.ckpt"
    path.write_bytes(pickle.dumps({"payload": MALICIOUS["builtins.exec"](marker)}, protocol=4))
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(path)
    assert not marker.exists()


def _truncated(source, target):
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def _huge_header(target):
    """A .safetensors file whose 8-byte header length says 2**62 (a MemoryError if read as told)."""
    target.write_bytes((2**62).to_bytes(8, "little") + b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}')
    return target


BAD_FILES = ("truncated.safetensors", "huge_header.safetensors", "truncated.ckpt", "notes.txt", "random.ckpt",
             "missing.ckpt")


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["as stored", "cast while read"])
@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_name_the_file(state, lightning_ckpt, tmp_path, case, dtype):
    safetensors_file = tmp_path / "whole.safetensors"
    save_file(state, safetensors_file)
    make = {
        "truncated.safetensors": lambda path: _truncated(safetensors_file, path),
        "huge_header.safetensors": _huge_header,
        "truncated.ckpt": lambda path: _truncated(lightning_ckpt, path),
        "notes.txt": lambda path: path.write_text("not weights"),
        "random.ckpt": lambda path: path.write_bytes(np.random.default_rng(0).bytes(4096)),
        "missing.ckpt": lambda path: None,
    }
    path = tmp_path / case
    make[case](path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path, dtype)
    assert str(path) in str(error.value)
    if case in ("notes.txt", "missing.ckpt"):
        assert ".safetensors, .ckpt, .pt, .pth or .bin" in str(error.value)


def test_non_tensor_inside_state_dict_is_refused(state, tmp_path):
    path = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {**state, "model.note": "text", "model.step": 3}}, path)
    with pytest.raises(CheckpointError, match=r"not tensors: 'model.note', 'model.step'"):
        read_checkpoint(path)
    torch.save({"global_step": 3}, path)
    with pytest.raises(CheckpointError, match="no tensors found"):
        read_checkpoint(path)


def test_drop_training_buffers(state):
    buffers = {name: torch.zeros(3) for name in TRAINING_BUFFERS}
    old_text = {
        "cond_stage_model.transformer.embeddings.position_embedding.weight": torch.ones(2),
        "cond_stage_model.transformer.embeddings.position_ids": torch.arange(77)[None],
        "cond_stage_model.transformer.encoder.layers.0.mlp.fc1.bias": torch.full((2,), 2.0),
        "cond_stage_model.transformer.final_layer_norm.weight": torch.full((2,), 3.0),
    }
    loss = {
        "first_stage_model.loss.logvar": torch.zeros(()),
        "first_stage_model.loss.discriminator.main.0.weight": torch.zeros(2),
    }
    given = {**state, **buffers, **old_text, **loss}
    expected = {
        **state,
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": old_text[
            "cond_stage_model.transformer.embeddings.position_embedding.weight"
        ],
        "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.bias": old_text[
            "cond_stage_model.transformer.encoder.layers.0.mlp.fc1.bias"
        ],
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": old_text[
            "cond_stage_model.transformer.final_layer_norm.weight"
        ],
    }
    assert {"betas", "alphas_cumprod", "posterior_mean_coef2", "logvar"} <= set(TRAINING_BUFFERS)
    _assert_same(drop_training_buffers(given), expected)
    assert len(given) == len(state) + len(buffers) + len(old_text) + len(loss), "input must not be modified"


def test_format_keys():
    assert format_keys(["b", "a"]) == "'a', 'b'"
    many = [f"k{index:02d}" for index in range(42)]
    assert format_keys(many) == "'k00', 'k01', 'k02', 'k03', 'k04' ... and 37 more"


def test_safetensors_cast_while_read_equals_cast_after(tmp_path):
    """With a target dtype, a file stored in another one is read tensor by tensor (plain reads, no memory map kept)
    and gives exactly the tensors a memory-mapped read cast afterwards gives; integer tensors are not cast."""
    g = torch.Generator().manual_seed(0)
    stored = {"a.weight": torch.randn(3, 5, generator=g), "b.bias": torch.randn(7, generator=g).half(),
              "empty": torch.zeros(0), "ids": torch.arange(4)}
    path = tmp_path / "mixed.safetensors"
    save_file(stored, path)
    cast = read_weight_file(path, torch.bfloat16)
    assert set(cast) == set(stored)
    for key, tensor in stored.items():
        expected = tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor
        assert cast[key].dtype == expected.dtype and torch.equal(cast[key], expected), key
    same = read_weight_file(path, torch.float16)
    assert same["b.bias"].dtype == torch.float16 and torch.equal(same["b.bias"], stored["b.bias"])
