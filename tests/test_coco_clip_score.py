"""CLIP score: both CLIP towers against transformers' CLIPModel (random weights, every tensor randomised, 64-wide
heads, float64) in the transformers and the OpenAI key layout, the score against the reference formula, OpenAI's
image transform against transformers' CLIP image processor, and wrong weights named."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from models.checkpoint import CheckpointError
from models.tokenizer import CLIPTokenizer
from reference import randomised
from sld.eval.clip_score import CLIPScorer, clip_scores, load_clip
from sld.eval.clip_vision import preprocess

SIZE, PATCH, PROJECTION = 28, 14, 32
CAPTIONS = ["a photo of a cat", "two dogs playing in the snow near a red car", "a plate", "a kitchen with a stove"]


def reference_config(activation: str = "quick_gelu"):
    from transformers import CLIPConfig

    text = dict(vocab_size=49408, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, hidden_act=activation, layer_norm_eps=1e-5)
    vision = dict(hidden_size=192, intermediate_size=384, num_hidden_layers=2, num_attention_heads=3, image_size=SIZE,
                  patch_size=PATCH, hidden_act=activation, layer_norm_eps=1e-5)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=PROJECTION)


def reference_model(seed: int, activation: str = "quick_gelu"):
    """transformers' CLIPModel in float64 with every tensor randomised, and those tensors."""
    from transformers import CLIPModel

    model = CLIPModel(reference_config(activation)).double().eval()
    weights = randomised(model.state_dict(), seed)
    model.load_state_dict(weights, strict=True)
    return model.requires_grad_(False), weights


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    model, weights = reference_model(11)
    folder = tmp_path_factory.mktemp("clip")
    save_file(weights, folder / "model.safetensors")
    return model, weights, folder


def openai_layout(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same model as OpenAI's CLIP (and open_clip) stores it: fused in_proj, transposed projections."""
    out = {"logit_scale": weights["logit_scale"], "text_projection": weights["text_projection.weight"].T.contiguous(),
           "visual.proj": weights["visual_projection.weight"].T.contiguous(),
           "token_embedding.weight": weights["text_model.embeddings.token_embedding.weight"],
           "positional_embedding": weights["text_model.embeddings.position_embedding.weight"],
           "visual.class_embedding": weights["vision_model.embeddings.class_embedding"],
           "visual.conv1.weight": weights["vision_model.embeddings.patch_embedding.weight"],
           "visual.positional_embedding": weights["vision_model.embeddings.position_embedding.weight"]}
    norms = {"text_model.final_layer_norm": "ln_final", "vision_model.pre_layrnorm": "visual.ln_pre",
             "vision_model.post_layernorm": "visual.ln_post"}
    parts = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc",
             "mlp.fc2": "mlp.c_proj"}
    for kind in ("weight", "bias"):
        out.update({f"{theirs}.{kind}": weights[f"{ours}.{kind}"] for ours, theirs in norms.items()})
        for tower, blocks in (("text_model", "transformer.resblocks"), ("vision_model", "visual.transformer.resblocks")):
            for i in range(2):
                layer, block = f"{tower}.encoder.layers.{i}.", f"{blocks}.{i}."
                out[f"{block}attn.in_proj_{kind}"] = torch.cat([weights[f"{layer}self_attn.{p}_proj.{kind}"]
                                                                for p in "qkv"])
                out.update({f"{block}{theirs}.{kind}": weights[f"{layer}{ours}.{kind}"] for ours, theirs in parts.items()})
    return out


def inputs():
    pixels = torch.randn(len(CAPTIONS), 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return pixels, CLIPTokenizer()(CAPTIONS)


def assert_towers_match(reference, path, activation: str = "quick_gelu") -> None:
    pixels, ids = inputs()
    image_tower, text_tower = load_clip(path, dtype=torch.float64)
    assert text_tower.cfg.heads == 2 and text_tower.cfg.activation == activation
    assert (image_tower.cfg.heads, image_tower.cfg.activation) == (3, activation)
    assert (image_tower(pixels) - reference.get_image_features(pixel_values=pixels).pooler_output).abs().max() < 1e-10
    assert (text_tower(ids) - reference.get_text_features(input_ids=ids).pooler_output).abs().max() < 1e-10


def test_towers_match_transformers_clip_model_in_float64(clip, tmp_path):
    reference, weights, folder = clip
    assert_towers_match(reference, folder)
    openai = tmp_path / "ViT-tiny.pt"
    torch.save(openai_layout(weights), openai)
    assert_towers_match(reference, openai)
    gelu, gelu_weights = reference_model(12, "gelu")
    (tmp_path / "gelu").mkdir()
    save_file(gelu_weights, tmp_path / "gelu" / "model.safetensors")
    (tmp_path / "gelu" / "config.json").write_text(json.dumps(reference_config("gelu").to_dict()))
    assert_towers_match(gelu, tmp_path / "gelu", "gelu")


def test_scores_follow_the_reference_formula(clip):
    """100 * max(cos, 0) per pair, against CLIPModel's normalised embeddings; both signs of the cosine occur."""
    reference, _, folder = clip
    pixels, ids = inputs()
    output = reference(input_ids=ids, pixel_values=pixels)
    cosine = (output.image_embeds * output.text_embeds).sum(dim=-1)
    assert (cosine > 0).any() and (cosine < 0).any()
    image_tower, text_tower = load_clip(folder, dtype=torch.float64)
    scores = clip_scores(image_tower(pixels), text_tower(ids))
    assert (scores - 100 * cosine.clamp(min=0)).abs().max() < 1e-6
    assert (scores[cosine < 0] == 0).all()


@pytest.mark.parametrize("size", [(64, 64), (64, 96), (120, 80)])
def test_image_transform_matches_transformers_clip_processor(size):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    processor = CLIPImageProcessorPil(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})
    expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    assert (preprocess(image, SIZE) - expected).abs().max() < 1e-5  # float32 normalisation


def test_scorer_scores_image_files_like_the_reference(clip, tmp_path):
    """Image files and captions in, through OpenAI's transform; float32 towers against the float64 reference."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    reference, _, folder = clip
    rng = np.random.default_rng(4)
    paths = []
    for k in range(len(CAPTIONS)):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(rng.integers(0, 256, (40 + 8 * k, 48, 3), dtype=np.uint8)).save(paths[-1])
    processor = CLIPImageProcessorPil(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})
    pixels = processor(images=[Image.open(p) for p in paths], return_tensors="pt")["pixel_values"].double()
    output = reference(input_ids=CLIPTokenizer()(CAPTIONS), pixel_values=pixels)
    expected = 100 * (output.image_embeds * output.text_embeds).sum(dim=-1).clamp(min=0)
    scores = CLIPScorer(folder).scores(paths, CAPTIONS)
    assert np.abs(np.array(scores) - expected.numpy()).max() < 1e-3  # float32 towers and pixels


def test_wrong_weights_are_named(clip, tmp_path):
    _, weights, _ = clip
    with pytest.raises(ValueError, match="CLIP weights '.*absent': no such file or folder; allowed: a transformers"):
        CLIPScorer(tmp_path / "absent")
    vision_only = {k: v for k, v in weights.items() if not k.startswith("text_")}
    save_file(vision_only, tmp_path / "vision.safetensors")
    with pytest.raises(CheckpointError, match="not a CLIP text tower with projection \\(missing "
                                              "'text_model.embeddings.position_embedding.weight'"):
        load_clip(tmp_path / "vision.safetensors")
    broken = dict(weights)
    broken.pop("text_model.encoder.layers.1.mlp.fc2.bias")
    save_file(broken, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match="weights do not match a CLIP text tower; missing keys \\(1\\): "
                                              "'text_model.encoder.layers.1.mlp.fc2.bias'"):
        load_clip(tmp_path / "broken.safetensors")
    (tmp_path / "silu").mkdir()
    save_file(weights, tmp_path / "silu" / "model.safetensors")
    (tmp_path / "silu" / "config.json").write_text(json.dumps({"text_config": {"hidden_act": "silu"}}))
    with pytest.raises(CheckpointError, match="activation 'silu' is not supported; allowed: quick_gelu, gelu"):
        load_clip(tmp_path / "silu")
