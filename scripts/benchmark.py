"""Benchmark the toolkit against diffusers on the same random weights, in one run (issue 5).

One random-weight Stable Diffusion 1.5 or, with `--family sdxl`, SDXL base (full size, or a tiny one with
`--quick`) is saved once as a single `.safetensors` file in the original layout (SDXL's in float16, as it ships)
and, converted by diffusers' own single-file converters, as a diffusers folder.
Every measurement then runs in a fresh subprocess per implementation (peak RSS from `getrusage` in the child),
the two implementations alternating, and the table shows medians over `--repeats` and the ratio ours/diffusers.

    python scripts/benchmark.py --repeats 3      # full SD 1.5 at 512x512 (minutes per repeat on a small CPU)
    python scripts/benchmark.py --quick          # tiny model at 64x64, seconds; what the test suite runs
    python scripts/benchmark.py --device cuda    # the same on a GPU in float16/bfloat16 (median of 20 calls)
    python scripts/benchmark.py --family sdxl    # SDXL base at 512x512: loads of the float16 file, SLD, VAE

The LoRA row (SD 1.5 only) loads the same checkpoint with a random kohya LoRA of about 150 MB (float16; 1 MB with
`--quick`) on every attention, feed-forward and projection layer of the UNet and the text encoder merged into the
weights.

The SLD evaluation is one UNet call for 3 guidance branches (unconditional, prompt, safety concept) of one
latent: ours takes x [1, 4, h, w] with context [3, 77, 768] (SDXL: [3, 77, 2048] and each branch's vector
conditioning); diffusers takes x repeated 3 times, as its pipeline does. FLOPs per UNet evaluation are counted
once with `torch.utils.flop_counter.FlopCounterMode` on the meta device (convolutions, matmuls and attention, a
multiply-add = 2 FLOPs; the 3 full branches, so the shared-prefix saving shows as a higher rate); the matmul peak
is the best of a few square `torch.mm` calls in each dtype.
diffusers and transformers are imported here only, never by the packages.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import keys  # noqa: E402
from models.config import ModelConfig, UNetConfig, VAEConfig  # noqa: E402
from models.layers import cpu_multiplies_natively  # noqa: E402
from models.loader import random_weights  # noqa: E402
from models.sd1 import SD1, TINY_SD1  # noqa: E402
from models.sdxl import SDXL, TINY_SDXL, vector_conditioning  # noqa: E402

BRANCHES = 3  # SLD: unconditional, prompt, safety concept
TIMESTEP = 981
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GPU_CALLS = 20  # timed calls per GPU measurement (after 3 warm-up calls); one call is milliseconds
IMPLS = ("ours", "diffusers")


@dataclass(frozen=True)
class Setting:
    name: str
    cfg: ModelConfig
    image_size: int
    matmul_size: int


FULL = Setting("SD 1.5 (random weights), 512x512", SD1, 512, 2048)
QUICK = Setting("tiny SD 1 topology (random weights), 64x64", TINY_SD1, 64, 1024)
LORA_BYTES = {FULL.name: 150_000_000, QUICK.name: 1_000_000}  # float16 kohya file, as community style LoRAs come
LORA_MODULES = ("proj_in", "proj_out", "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q",
                "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "self_attn.q_proj",
                "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
FULL_SDXL = Setting("SDXL base (random weights, float16 file), 512x512", SDXL, 512, 2048)
QUICK_SDXL = Setting("tiny SDXL topology (random weights, float16 file), 64x64", TINY_SDXL, 64, 1024)
SETTINGS = {("sd1", False): FULL, ("sd1", True): QUICK, ("sdxl", False): FULL_SDXL, ("sdxl", True): QUICK_SDXL}

# (task, row label) per device; a task runs in its own subprocess and returns seconds and peak memory
TASKS = {
    "cpu": (
        ("load", "load, float32 checkpoint from page cache"),
        ("load-lora", "load with a kohya LoRA merged, float32, files from page cache"),
        ("sld-float32", "SLD evaluation (3 branches), float32"),
        ("sld-bfloat16", "SLD evaluation (3 branches), bfloat16"),
        ("vae-float32", "VAE decode, float32"),
        ("vae-bfloat16", "VAE decode, bfloat16"),
    ),
    "sdxl-cpu": (
        ("load-bfloat16", "load, float16 checkpoint from page cache as bfloat16"),
        ("load-float32", "load, float16 checkpoint from page cache as float32"),
        ("sld-float32", "SLD evaluation (3 branches), float32"),
        ("sld-bfloat16", "SLD evaluation (3 branches), bfloat16"),
        ("vae-float32", "VAE decode, float32"),
        ("vae-bfloat16", "VAE decode, bfloat16"),
    ),
    "cuda": (
        ("load", "load to the GPU as float16, checkpoint from page cache"),
        ("load-lora", "load to the GPU as float16 with a kohya LoRA merged, files from page cache"),
        ("sld-float16", "SLD evaluation (3 branches), float16"),
        ("sld-bfloat16", "SLD evaluation (3 branches), bfloat16"),
        ("vae-float16", "VAE decode, float16"),
    ),
}


# ---------------------------------------------------------------- preparing the weights (once)

def diffusers_unet_config(cfg: UNetConfig, sample_size: int) -> dict:
    widths = tuple(cfg.model_channels * m for m in cfg.channel_mult)
    down = tuple("CrossAttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in range(len(widths)))
    up = tuple("CrossAttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D" for i in reversed(range(len(widths))))
    return dict(sample_size=sample_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
                block_out_channels=widths, layers_per_block=cfg.num_res_blocks, down_block_types=down,
                up_block_types=up, cross_attention_dim=cfg.context_dim, attention_head_dim=cfg.num_heads,
                norm_num_groups=cfg.norm_groups)


def diffusers_sdxl_unet_config(cfg: ModelConfig, sample_size: int) -> dict:
    """SDXL's extras: 64-wide heads per level, linear projections, per-level depth, text_time conditioning."""
    unet = cfg.unet
    pooled = cfg.text2.projection_dim
    return diffusers_unet_config(unet, sample_size) | dict(
        attention_head_dim=tuple(unet.model_channels * m // unet.num_head_channels for m in unet.channel_mult),
        use_linear_projection=True, transformer_layers_per_block=tuple(max(1, d) for d in unet.transformer_depth),
        addition_embed_type="text_time", addition_time_embed_dim=(unet.adm_in_channels - pooled) // 6,
        projection_class_embeddings_input_dim=unet.adm_in_channels)


def tasks(family: str, device: str) -> tuple:
    return TASKS["sdxl-cpu" if family == "sdxl" and device == "cpu" else device]


def diffusers_vae_config(cfg: VAEConfig, sample_size: int) -> dict:
    widths = tuple(cfg.base_channels * m for m in cfg.channel_mult)
    return dict(in_channels=cfg.in_channels, out_channels=cfg.out_channels, block_out_channels=widths,
                down_block_types=("DownEncoderBlock2D",) * len(widths), up_block_types=("UpDecoderBlock2D",) * len(widths),
                layers_per_block=cfg.num_res_blocks, latent_channels=cfg.z_channels, norm_num_groups=cfg.norm_groups,
                scaling_factor=cfg.scaling_factor, sample_size=sample_size, force_upcast=cfg.force_upcast)


def clip_config(t, layers: int, projection_dim: int | None = None):
    from transformers import CLIPTextConfig

    extra = {} if projection_dim is None else dict(projection_dim=projection_dim)
    return CLIPTextConfig(vocab_size=t.vocab_size, hidden_size=t.width, intermediate_size=t.mlp_width,
                          num_hidden_layers=layers, num_attention_heads=t.heads, max_position_embeddings=t.max_length,
                          hidden_act=t.activation, layer_norm_eps=1e-5, **extra)


def save_diffusers_folder(sd: dict[str, torch.Tensor], setting: Setting, folder: Path) -> None:
    """The same weights as a diffusers folder, converted by diffusers' single-file converters."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cfg, latent = setting.cfg, setting.image_size // setting.cfg.vae.downscale
    sdxl = cfg.text2 is not None
    unet_config = diffusers_sdxl_unet_config(cfg, latent) if sdxl else diffusers_unet_config(cfg.unet, latent)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**diffusers_vae_config(cfg.vae, setting.image_size))
    unet.load_state_dict(convert_ldm_unet_checkpoint(sd, unet.config), strict=True, assign=True)
    unet.save_pretrained(folder / "unet")
    vae.load_state_dict(convert_ldm_vae_checkpoint(sd, vae.config), strict=True, assign=True)
    vae.save_pretrained(folder / "vae")
    # SDXL's CLIP tower is stored whole (one layer more than it runs)
    text = CLIPTextModel(clip_config(cfg.text, cfg.text.layers + sdxl))
    # transformers 5 dropped the `text_model.` level that checkpoints (and diffusers' converter) still carry
    text_sd = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(sd).items()}
    text.load_state_dict(text_sd, strict=True)
    text.save_pretrained(folder / "text_encoder")
    if sdxl:
        text2 = CLIPTextModelWithProjection(clip_config(cfg.text2, cfg.text2.layers, cfg.text2.projection_dim))
        text2.load_state_dict(convert_open_clip_checkpoint(text2, sd, prefix=keys.SDXL_OPENCLIP), strict=True)
        text2.save_pretrained(folder / "text_encoder_2")


def original_sdxl_towers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SDXL weights as the original file stores them: the CLIP tower with the last layer and final norm it never runs
    (random: a copy of layer 0's, a unit norm)."""
    first = keys.SDXL_CLIP + "encoder.layers.0."
    last = 1 + max(int(k.removeprefix(keys.SDXL_CLIP + "encoder.layers.").split(".")[0])
                   for k in sd if k.startswith(keys.SDXL_CLIP + "encoder.layers."))
    extra = {k.replace(first, keys.SDXL_CLIP + f"encoder.layers.{last}."): v.clone() for k, v in sd.items()
             if k.startswith(first)}
    embedding = sd[keys.SDXL_CLIP + "embeddings.token_embedding.weight"]
    extra[keys.SDXL_CLIP + "final_layer_norm.weight"] = embedding.new_ones(embedding.shape[1])
    extra[keys.SDXL_CLIP + "final_layer_norm.bias"] = embedding.new_zeros(embedding.shape[1])
    return {**sd, **extra}


def save_lora(sd: dict[str, torch.Tensor], setting: Setting, path: Path) -> None:
    """A random kohya LoRA (float16, with alphas) on every attention, feed-forward and projection layer of the UNet
    and text encoder, its rank chosen so that the file has about LORA_BYTES[setting] bytes."""
    from safetensors.torch import save_file

    from models.adapter_keys import adapter_targets

    shapes = {k: v.shape for k, v in sd.items()}
    targets = {name: t for name, t in adapter_targets(setting.cfg, shapes).items()
               if name.startswith(("lora_unet_", "lora_te_")) and name.endswith(
                   tuple(m.replace(".", "_") for m in LORA_MODULES))}
    widths = sum(shapes[t.key][0] + shapes[t.key][1] for t in targets.values())
    rank = max(1, round(LORA_BYTES[setting.name] / 2 / widths))
    g, tensors = torch.Generator().manual_seed(2), {}
    for name, target in targets.items():
        out, inp, *kernel = shapes[target.key]
        tensors[f"{name}.lora_down.weight"] = (torch.randn(rank, inp, *kernel, generator=g) / inp ** 0.5).half()
        tensors[f"{name}.lora_up.weight"] = (torch.randn(out, rank, *kernel, generator=g) / rank ** 0.5).half()
        tensors[f"{name}.alpha"] = torch.tensor(rank / 2, dtype=torch.float16)
    save_file(tensors, path)


def prepare(setting: Setting, workdir: Path) -> None:
    from safetensors.torch import save_file

    if setting.cfg.text2 is None:
        sd = random_weights(setting.cfg, seed=0, dtype=torch.float32)
    else:  # SDXL ships in float16; drawn in it, so its 3.5 billion weights need 7 GB, not 14 GB
        sd = original_sdxl_towers(random_weights(setting.cfg, seed=0, dtype=torch.float16))
    save_file(sd, workdir / "model.safetensors")
    save_diffusers_folder(sd, setting, workdir / "diffusers")
    if setting.cfg.text2 is None:  # the LoRA row is SD 1's
        save_lora(sd, setting, workdir / "lora.safetensors")


def read_into_page_cache(folder: Path) -> None:
    for path in folder.rglob("*.safetensors"):
        with open(path, "rb") as f:
            while f.read(1 << 26):
                pass


# ---------------------------------------------------------------- one measurement (child process)

def load_ours(workdir: Path, dtype: torch.dtype, device: str, lora: bool = False):
    from models.adapters import LoraSpec
    from models.loader import load_checkpoint

    loras = [LoraSpec(str(workdir / "lora.safetensors"))] if lora else []
    return load_checkpoint(workdir / "model.safetensors", dtype=dtype, device=device, loras=loras).model


def load_diffusers(workdir: Path, dtype: torch.dtype, device: str, lora: bool = False) -> dict:
    """All three parts, as a pipeline holds them (ours loads the whole single file too); with `lora`, the LoRA loaded
    by `load_lora_weights` and merged by `fuse_lora`, as ours merges it."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from transformers import CLIPTextModelWithProjection

    classes = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel,
               "text_encoder_2": CLIPTextModelWithProjection}  # the last: SDXL's only
    parts = {part: cls.from_pretrained(workdir / "diffusers" / part, torch_dtype=dtype).to(device).eval()
             for part, cls in classes.items() if (workdir / "diffusers" / part).is_dir()}
    if lora:
        pipe = StableDiffusionPipeline(**parts, tokenizer=None, scheduler=DDIMScheduler(), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
        pipe.load_lora_weights(str(workdir / "lora.safetensors"))
        pipe.fuse_lora()
    return parts


def sld_call(impl: str, workdir: Path, setting: Setting, dtype: torch.dtype, device: str):
    """A zero-argument callable doing one SLD model evaluation, the model already loaded."""
    latent = setting.image_size // setting.cfg.vae.downscale
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, setting.cfg.unet.in_channels, latent, latent, generator=g).to(device, dtype)
    context = torch.randn(BRANCHES, setting.cfg.text.max_length, setting.cfg.unet.context_dim, generator=g).to(device, dtype)
    t = torch.tensor([TIMESTEP], device=device)
    cfg = setting.cfg
    if cfg.text2 is not None:  # SDXL: each branch's pooled embedding and the same micro-conditioning
        pooled = torch.randn(BRANCHES, cfg.text2.projection_dim, generator=g).to(device, dtype)
        time_ids = torch.tensor([[setting.image_size] * 2 + [0, 0] + [setting.image_size] * 2] * BRANCHES,
                                device=device, dtype=dtype)
        y = {"y": vector_conditioning(pooled, time_ids, cfg.unet.adm_in_channels)}
        added = {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}
    else:
        y, added = {}, {}
    if impl == "ours":
        unet = load_ours(workdir, dtype, device).unet
        return lambda: unet(x, t, context, **y)
    unet = load_diffusers(workdir, dtype, device)["unet"]
    return lambda: unet(x.repeat(BRANCHES, 1, 1, 1), t, encoder_hidden_states=context, **added).sample


def vae_call(impl: str, workdir: Path, setting: Setting, dtype: torch.dtype, device: str):
    latent = setting.image_size // setting.cfg.vae.downscale
    z = torch.randn(1, setting.cfg.vae.z_channels, latent, latent, generator=torch.Generator().manual_seed(1))
    z = z.to(device, dtype)
    if impl == "ours":
        vae = load_ours(workdir, dtype, device).vae
        return lambda: vae.decode(z)
    vae = load_diffusers(workdir, dtype, device)["vae"]
    return lambda: vae.decode(z).sample


def import_implementation(impl: str) -> None:
    """Import the implementation's modules before any timer starts (diffusers takes seconds to import)."""
    if impl == "ours":
        import models.loader  # noqa: F401
    else:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(work, device: str) -> dict:
    """Wall-clock seconds, and CPU seconds of all threads (less sensitive to other processes sharing the cores)."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    synchronize(device)
    return {"seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}


def timed_median(call, device: str) -> dict:
    """On a GPU: the median of GPU_CALLS synchronised calls after 3 warm-up calls."""
    for _ in range(3):
        call()
    runs = [timed(call, device) for _ in range(GPU_CALLS)]
    return {field: statistics.median(r[field] for r in runs) for field in runs[0]}


def measure(impl: str, task: str, workdir: Path, setting: Setting, device: str) -> dict:
    """Times of the task: the load itself, or (CPU) one call after one untimed warm-up call."""
    import_implementation(impl)
    if task.startswith("load"):
        default = torch.float32 if device == "cpu" else torch.float16
        dtype = DTYPES.get(task.split("-")[-1], default)  # SDXL's loads name their dtype
        load = load_ours if impl == "ours" else load_diffusers
        return timed(lambda: load(workdir, dtype, device, lora=task == "load-lora"), device)
    kind, dtype_name = task.split("-")
    call = (sld_call if kind == "sld" else vae_call)(impl, workdir, setting, DTYPES[dtype_name], device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()  # the weights stay counted; transients of the load do not
        return timed_median(call, device)
    call()
    return timed(call, device)


def peak_rss_mb() -> float:
    """This process's peak resident set. getrusage's ru_maxrss survives exec (a child would report the benchmark
    parent's peak when that is higher), so read VmHWM, which a new process image starts afresh."""
    status = Path("/proc/self/status")
    if status.exists():
        line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; no /proc elsewhere


def peak_memory_mb(device: str) -> float:
    """Peak resident memory on the CPU; on a GPU the peak of allocated device memory."""
    return peak_rss_mb() if device == "cpu" else torch.cuda.max_memory_allocated() / 2**20


def child(spec: dict) -> None:
    setting = SETTINGS[spec["family"], spec["quick"]]
    torch.set_num_threads(spec["threads"])
    with torch.inference_mode():
        times = measure(spec["impl"], spec["task"], Path(spec["workdir"]), setting, spec["device"])
    print(json.dumps({**times, "peak_memory_mb": peak_memory_mb(spec["device"])}))


def run_child(impl: str, task: str, workdir: Path, quick: bool, threads: int, device: str, family: str) -> dict:
    spec = json.dumps({"impl": impl, "task": task, "workdir": str(workdir), "quick": quick, "threads": threads,
                       "device": device, "family": family})
    done = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{impl} {task} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- FLOPs and the matmul peak

def unet_flops(cfg: ModelConfig, latent: int) -> int:
    """FLOPs of one UNet evaluation of BRANCHES full images, counted on the meta device (no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    from models.unet import UNet

    with torch.device("meta"), torch.inference_mode():
        unet = UNet(cfg.unet)
        x = torch.empty(BRANCHES, cfg.unet.in_channels, latent, latent)
        context = torch.empty(BRANCHES, cfg.text.max_length, cfg.unet.context_dim)
        y = {"y": torch.empty(BRANCHES, cfg.unet.adm_in_channels)} if cfg.unet.adm_in_channels else {}
        with FlopCounterMode(display=False) as counter:
            unet(x, TIMESTEP, context, **y)
    return counter.get_total_flops()


def matmul_peak(n: int, dtype: torch.dtype, device: str, tries: int = 5) -> float:
    """Best GFLOP/s of an n x n x n torch.mm in `dtype`."""
    a, b = torch.randn(n, n).to(device, dtype), torch.randn(n, n).to(device, dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(tries):
        seconds = timed(lambda: torch.mm(a, b), device)["seconds"]
        best = min(best, seconds)
    return 2 * n**3 / best / 1e9


# ---------------------------------------------------------------- the run and its table

def collect(workdir: Path, repeats: int, quick: bool, threads: int, device: str, family: str) -> dict:
    """results[impl][task] -> list of child results, implementations alternated inside every repeat."""
    results = {impl: {task: [] for task, _ in tasks(family, device)} for impl in IMPLS}
    for r in range(repeats):
        for task, label in tasks(family, device):
            for impl in IMPLS if r % 2 == 0 else reversed(IMPLS):
                results[impl][task].append(run_child(impl, task, workdir, quick, threads, device, family))
                print(f"  repeat {r + 1}/{repeats}: {impl:9s} {label}: {results[impl][task][-1]}", file=sys.stderr)
    return results


def median(results: dict, impl: str, task: str, field: str) -> float:
    return statistics.median(r[field] for r in results[impl][task])


def table(results: dict, flops: int, peaks: dict[str, float], device: str, family: str) -> list[str]:
    rows = ["| measurement (median) | ours | diffusers | ours/diffusers |", "|---|---:|---:|---:|"]

    def row(label: str, ours: float, theirs: float, digits: int) -> None:
        rows.append(f"| {label} | {ours:.{digits}f} | {theirs:.{digits}f} | {ours / theirs:.2f} |")

    chosen = tasks(family, device)
    for task, label in chosen:
        row(f"{label} (s)", median(results, "ours", task, "seconds"), median(results, "diffusers", task, "seconds"), 4)
    for task, label in chosen if device == "cpu" else ():
        row(f"CPU time: {label} (s)", median(results, "ours", task, "cpu_seconds"),
            median(results, "diffusers", task, "cpu_seconds"), 3)
    memory = "peak RSS" if device == "cpu" else "peak GPU memory allocated"
    for task, label in chosen:
        row(f"{memory}: {label} (MB)", median(results, "ours", task, "peak_memory_mb"),
            median(results, "diffusers", task, "peak_memory_mb"), 0)
    for name in peaks:
        rates = [flops / median(results, impl, f"sld-{name}", "seconds") / 1e9 for impl in IMPLS]
        row(f"UNet GFLOP/s, {name} (% of {peaks[name]:.0f} GFLOP/s matmul peak: "
            f"{100 * rates[0] / peaks[name]:.0f}% vs {100 * rates[1] / peaks[name]:.0f}%)", *rates, 1)
    return rows


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return names[0] if names else "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model at 64x64 (seconds), for the test suite")
    parser.add_argument("--repeats", type=int, default=3, help="subprocess runs per measurement and implementation")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads in every measurement (default: torch's default, %(default)s here)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: float32 and bfloat16; cuda: float16 and bfloat16 on the first GPU")
    parser.add_argument("--family", choices=("sd1", "sdxl"), default="sd1",
                        help="sd1: SD 1.5 (default); sdxl: SDXL base (its float16 file loaded as bfloat16 and float32)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if args.repeats < 1 or args.threads < 1:
        parser.error(f"--repeats and --threads must be >= 1, got {args.repeats} and {args.threads}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here")
    if args.device == "cuda" and args.family == "sdxl":
        parser.error("--family sdxl runs on the CPU only (--device cpu)")
    torch.set_num_threads(args.threads)
    setting = SETTINGS[args.family, args.quick]
    latent = setting.image_size // setting.cfg.vae.downscale
    with tempfile.TemporaryDirectory(prefix="sld-benchmark-") as tmp:
        workdir = Path(tmp)
        start = time.perf_counter()
        prepare(setting, workdir)
        lora_megabytes = (workdir / "lora.safetensors").stat().st_size / 1e6 if args.family == "sd1" else 0
        print(f"prepared weights in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        read_into_page_cache(workdir)
        flops = unet_flops(setting.cfg, latent)
        names = [task.split("-")[1] for task, _ in tasks(args.family, args.device) if task.startswith("sld-")]
        peaks = {name: matmul_peak(setting.matmul_size, DTYPES[name], args.device) for name in names}
        results = collect(workdir, args.repeats, args.quick, args.threads, args.device, args.family)
    print(f"## {setting.name}, {args.device}: medians of {args.repeats} run(s), one subprocess per measurement\n")
    print("\n".join(table(results, flops, peaks, args.device, args.family)))
    if args.family == "sd1":
        print(f"\nLoRA: {lora_megabytes:.0f} MB kohya file (float16) on every attention, feed-forward and projection "
              "layer; diffusers loads it with load_lora_weights and merges it with fuse_lora (needs peft).")
    print(f"UNet evaluation: {flops / 1e9:.1f} GFLOP for {BRANCHES} branches ({flops / BRANCHES / 1e9:.1f} per image), "
          "counted by FlopCounterMode.")
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}; GPU times are medians of {GPU_CALLS} "
              "synchronised calls after 3 warm-up calls.")
    print(f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, {args.threads} torch threads, torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; native bfloat16 dot products: "
          f"{cpu_multiplies_natively(torch.bfloat16)} (without them ours computes bfloat16 weights in float32).")


if __name__ == "__main__":
    main()
