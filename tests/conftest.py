"""Shared fixtures: the tiny random SD 1 model (every tensor randomised) and the same weights in diffusers/transformers."""
import pytest
import torch

from models.loader import random_weights
from models.sd1 import TINY_SD1

SEED = 1234


@pytest.fixture(scope="session")
def tiny_weights() -> dict[str, torch.Tensor]:
    """CompVis-layout float64 state dict of the tiny SD 1 model."""
    return random_weights(TINY_SD1, SEED)


def diffusers_unet_config(cfg=TINY_SD1.unet) -> dict:
    widths = tuple(cfg.model_channels * m for m in cfg.channel_mult)
    down = tuple("CrossAttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in range(len(widths)))
    up = tuple("CrossAttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D" for i in reversed(range(len(widths))))
    return dict(sample_size=8, in_channels=cfg.in_channels, out_channels=cfg.out_channels, block_out_channels=widths,
                layers_per_block=cfg.num_res_blocks, down_block_types=down, up_block_types=up,
                cross_attention_dim=cfg.context_dim, attention_head_dim=cfg.num_heads, norm_num_groups=cfg.norm_groups)


def diffusers_vae_config(cfg=TINY_SD1.vae) -> dict:
    widths = tuple(cfg.base_channels * m for m in cfg.channel_mult)
    return dict(in_channels=cfg.in_channels, out_channels=cfg.out_channels, block_out_channels=widths,
                down_block_types=("DownEncoderBlock2D",) * len(widths), up_block_types=("UpDecoderBlock2D",) * len(widths),
                layers_per_block=cfg.num_res_blocks, latent_channels=cfg.z_channels, norm_num_groups=cfg.norm_groups,
                scaling_factor=cfg.scaling_factor, sample_size=64)


def transformers_clip_config(cfg=TINY_SD1.text):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.width, intermediate_size=cfg.mlp_width,
                          num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, max_position_embeddings=cfg.max_length,
                          hidden_act=cfg.activation, layer_norm_eps=1e-5)


@pytest.fixture(scope="session")
def reference_parts(tiny_weights):
    """diffusers UNet and VAE and transformers CLIPTextModel (float64) filled from the same weights by diffusers' own
    single-file converters, an independent check of our key names."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint)
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel(**diffusers_unet_config()).double().eval()
    unet.load_state_dict(convert_ldm_unet_checkpoint(tiny_weights, unet.config), strict=True)
    vae = AutoencoderKL(**diffusers_vae_config()).double().eval()
    vae.load_state_dict(convert_ldm_vae_checkpoint(tiny_weights, vae.config), strict=True)
    text = CLIPTextModel(transformers_clip_config()).double().eval()
    # transformers 5 dropped the `text_model.` level that checkpoints (and diffusers' converter) still carry
    text_sd = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(tiny_weights).items()}
    text.load_state_dict(text_sd, strict=True)
    return unet.requires_grad_(False), vae.requires_grad_(False), text.requires_grad_(False)


def openai_clip_vocab() -> tuple[list[str], list[tuple[str, str]]]:
    """Vocabulary and merges as OpenAI CLIP's simple_tokenizer.py builds them from the shipped BPE file."""
    import gzip
    from importlib.resources import files

    lines = gzip.decompress((files("models") / "data" / "bpe_simple_vocab_16e6.txt.gz").read_bytes()).decode().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    extra = [b for b in range(256) if b not in printable]
    symbols = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges]
    return vocab + ["<|startoftext|>", "<|endoftext|>"], merges


@pytest.fixture(scope="session")
def reference_tokenizer(tmp_path_factory):
    """transformers' CLIPTokenizer built from vocab.json / merges.txt derived from the shipped BPE file."""
    import json

    from transformers import CLIPTokenizer as ReferenceTokenizer

    vocab, merges = openai_clip_vocab()
    folder = tmp_path_factory.mktemp("clip_tokenizer")
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n")
    return ReferenceTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


@pytest.fixture(scope="session")
def tiny_sd2_weights() -> dict[str, torch.Tensor]:
    """CompVis-layout float64 state dict of the tiny SD 2 model (the 23-of-24-blocks form our loader keeps)."""
    from models.sd2 import TINY_SD2

    return random_weights(TINY_SD2, SEED + 2)


@pytest.fixture(scope="session")
def tiny_sd2_original(tiny_sd2_weights) -> dict[str, torch.Tensor]:
    """The same weights as an original SD 2 file stores them: a full OpenCLIP tower with one more block (never run by
    SD 2), text_projection and logit_scale, all randomised."""
    from models.keys import OPENCLIP as PREFIX

    g = torch.Generator().manual_seed(SEED + 3)
    block = PREFIX + "transformer.resblocks.{}."
    last = max(int(k.split(".")[4]) for k in tiny_sd2_weights if k.startswith(PREFIX + "transformer.resblocks."))
    extra = {k.replace(block.format(0), block.format(last + 1)): torch.randn(v.shape, generator=g, dtype=v.dtype)
             for k, v in tiny_sd2_weights.items() if k.startswith(block.format(0))}
    width = tiny_sd2_weights[PREFIX + "ln_final.weight"].shape[0]
    extra[PREFIX + "text_projection"] = torch.randn(width, width, generator=g, dtype=torch.float64)
    extra[PREFIX + "logit_scale"] = torch.tensor(4.6, dtype=torch.float64)
    return {**tiny_sd2_weights, **extra}


def diffusers_sd2_unet_config() -> dict:
    from models.sd2 import TINY_SD2

    cfg = TINY_SD2.unet
    heads = tuple(cfg.model_channels * m // cfg.num_head_channels for m in cfg.channel_mult)
    return diffusers_unet_config(cfg) | dict(attention_head_dim=heads, use_linear_projection=True, upcast_attention=True)


@pytest.fixture(scope="session")
def reference_sd2_parts(tiny_sd2_original):
    """diffusers UNet/VAE and a transformers GELU CLIPTextModel filled by diffusers' own converters (incl.
    `convert_open_clip_checkpoint`) from the original-layout file; the text model's last block is then removed, as
    diffusers' SD 2 text encoders end at the penultimate block."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint, convert_open_clip_checkpoint)
    from transformers import CLIPTextModel

    from models.sd2 import TINY_SD2

    unet = UNet2DConditionModel(**diffusers_sd2_unet_config()).double().eval()
    unet.load_state_dict(convert_ldm_unet_checkpoint(tiny_sd2_original, unet.config), strict=True)
    vae = AutoencoderKL(**diffusers_vae_config(TINY_SD2.vae)).double().eval()
    vae.load_state_dict(convert_ldm_vae_checkpoint(tiny_sd2_original, vae.config), strict=True)
    config = transformers_clip_config(TINY_SD2.text)
    config.num_hidden_layers = TINY_SD2.text.layers + 1
    text = CLIPTextModel(config).double().eval()
    converted = convert_open_clip_checkpoint(text, tiny_sd2_original)
    text.load_state_dict({k.removeprefix("text_model."): v for k, v in converted.items()}, strict=True)
    text.encoder.layers = text.encoder.layers[:-1]
    text.config.num_hidden_layers -= 1
    return unet.requires_grad_(False), vae.requires_grad_(False), text.requires_grad_(False)



@pytest.fixture(scope="session")
def tiny_sdxl_weights() -> dict[str, torch.Tensor]:
    """CompVis-layout float64 state dict of the tiny SDXL model in the form our loader keeps (the CLIP tower without
    its last layer and final norm, which SDXL never runs)."""
    from models.sdxl import TINY_SDXL

    return random_weights(TINY_SDXL, SEED + 4)


@pytest.fixture(scope="session")
def tiny_sdxl_original(tiny_sdxl_weights) -> dict[str, torch.Tensor]:
    """The same weights as Stability's original file stores them: the CLIP tower with one more layer and its final
    norm (randomised, never run), CLIP's position ids, OpenCLIP's logit scale and sgm's denoiser sigmas."""
    from models import keys
    from reference import randomised

    layer = keys.SDXL_CLIP + "encoder.layers.{}."
    last = max(int(k.split(".")[7]) for k in tiny_sdxl_weights if k.startswith(keys.SDXL_CLIP + "encoder.layers."))
    width = tiny_sdxl_weights[keys.SDXL_CLIP + "embeddings.token_embedding.weight"].shape[1]
    unused = {k.replace(layer.format(0), layer.format(last + 1)): v
              for k, v in tiny_sdxl_weights.items() if k.startswith(layer.format(0))}
    unused |= {keys.SDXL_CLIP + "final_layer_norm.weight": torch.ones(width), keys.SDXL_CLIP + "final_layer_norm.bias": torch.ones(width)}
    extra = randomised(unused, SEED + 5)
    extra[keys.SDXL_CLIP + "embeddings.position_ids"] = torch.arange(77)[None]
    extra[keys.SDXL_OPENCLIP + "logit_scale"] = torch.tensor(4.6, dtype=torch.float64)
    extra["denoiser.sigmas"] = torch.linspace(0.03, 14.6, 1000, dtype=torch.float64)
    return {**tiny_sdxl_weights, **extra}


def diffusers_sdxl_unet_config() -> dict:
    from models.sdxl import TINY_SDXL

    cfg = TINY_SDXL.unet
    heads = tuple(cfg.model_channels * m // cfg.num_head_channels for m in cfg.channel_mult)
    pooled = TINY_SDXL.text2.projection_dim
    return diffusers_unet_config(cfg) | dict(
        attention_head_dim=heads, use_linear_projection=True, transformer_layers_per_block=(1, 1, 2),
        addition_embed_type="text_time", addition_time_embed_dim=(cfg.adm_in_channels - pooled) // 6,
        projection_class_embeddings_input_dim=cfg.adm_in_channels)


@pytest.fixture(scope="session")
def tiny_sdxl_file(tiny_sdxl_original, tmp_path_factory):
    from reference import save_safetensors

    path = tmp_path_factory.mktemp("sdxl_file") / "sd_xl_tiny.safetensors"
    save_safetensors(tiny_sdxl_original, path)
    return path


@pytest.fixture(scope="session")
def tiny_sdxl_folder(tiny_sdxl_file, reference_tokenizer, tmp_path_factory):
    """A diffusers SDXL folder whose weights diffusers' own single-file loader converted from the original-layout file
    (`StableDiffusionXLPipeline.from_single_file(file, config=folder)`), an independent check of our key maps. The
    configs come first from a pipeline of untouched parts; the converted pipeline then overwrites the folder."""
    import copy

    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from models.sdxl import TINY_SDXL
    from reference import sdxl_scheduler_config

    folder = tmp_path_factory.mktemp("sdxl_folder")
    config2 = transformers_clip_config(TINY_SDXL.text2)
    config2.num_hidden_layers, config2.projection_dim = TINY_SDXL.text2.layers, TINY_SDXL.text2.projection_dim
    config1 = transformers_clip_config(TINY_SDXL.text)
    config1.num_hidden_layers = TINY_SDXL.text.layers + 1
    tokenizer2 = copy.deepcopy(reference_tokenizer)
    tokenizer2.pad_token = "!"
    skeleton = StableDiffusionXLPipeline(
        vae=AutoencoderKL(**diffusers_vae_config(TINY_SDXL.vae), force_upcast=True),
        text_encoder=CLIPTextModel(config1), text_encoder_2=CLIPTextModelWithProjection(config2),
        tokenizer=reference_tokenizer, tokenizer_2=tokenizer2, unet=UNet2DConditionModel(**diffusers_sdxl_unet_config()),
        scheduler=EulerDiscreteScheduler(**sdxl_scheduler_config()), force_zeros_for_empty_prompt=True,
        add_watermarker=False)
    skeleton.save_pretrained(folder)
    converted = StableDiffusionXLPipeline.from_single_file(str(tiny_sdxl_file), config=str(folder),
                                                           torch_dtype=torch.float64, local_files_only=True)
    converted.save_pretrained(folder)
    return folder


@pytest.fixture
def one_thread():
    """In-process generation on one thread, as the subprocesses run (a busy machine's spinning threads would slow
    the tiny model many times over)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
