"""Train the toy model on synthetic scenes, seeded, in stages that each save their result (a rerun resumes):

1. the KL VAE on the pictures (L1 + L2 reconstruction + a small KL term, as LDM's first stage without the GAN);
2. latent means of every scene and the scaling factor 1 / std (LDM's `scale_by_std`);
3. UNet + text encoder with epsilon prediction on SD's scaled-linear schedule, 10% empty captions for classifier-free
   guidance, an EMA of the weights (the EMA is what ships);
4. the decoder alone, fine-tuned on the latent means with the encoder frozen (as SD's "ft-MSE" decoder): the
   latent space the UNet learnt stays the same while the pictures get sharper;
5. the shape and blood classifier of `sld.toy.classifier`, on the scenes and their VAE reconstructions so it sees
   what the decoder draws;
6. export: one float16 `.safetensors` in the original SD single-file layout, plus the classifier.
"""
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from models.loader import StableDiffusion
from models.tokenizer import CLIPTokenizer
from models.toy import TOY_SD1
from sampling.schedule import alphas_cumprod, scaled_linear_betas
from sld.toy.classifier import CLASSIFIER_WEIGHTS, SceneNet, to_unit
from sld.toy.shapes import SHAPES, dataset


@dataclass(frozen=True)
class TrainConfig:
    out: Path
    seed: int = 0
    scenes: int = 30000
    vae_steps: int = 2000
    vae_batch: int = 16
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    decoder_steps: int = 1000
    decoder_lr: float = 5e-4
    unet_steps: int = 6000
    unet_batch: int = 64
    unet_lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    classifier_scenes: int = 8000
    classifier_steps: int = 3000
    classifier_lr: float = 2e-3
    checkpoint_every: int = 500
    log_every: int = 100


def cosine_lr(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def log(stage: str, step: int, steps: int, loss: float, started: float) -> None:
    print(f"{stage} {step}/{steps} loss {loss:.5f} ({time.time() - started:.0f} s)", flush=True)


def optimise(stage: str, optimizer: torch.optim.Optimizer, steps: int, peak_lr: float, cfg: TrainConfig,
             loss_at: Callable[[int], torch.Tensor], start: int = 0,
             after_step: Callable[[int], None] | None = None) -> None:
    """Steps start..steps-1 of one stage: warm-up + cosine learning rate, one backward pass of `loss_at(step)`,
    a log line every cfg.log_every steps and at the last, then `after_step(step)`."""
    started = time.time()
    for step in range(start, steps):
        set_lr(optimizer, cosine_lr(step, steps, peak_lr, cfg.warmup))
        loss = loss_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % cfg.log_every == 0 or step == steps - 1:
            log(stage, step, steps, loss.item(), started)
        if after_step is not None:
            after_step(step)


def vae_loss(model: StableDiffusion, images: torch.Tensor, generator: torch.Generator, kl_weight: float) -> torch.Tensor:
    vae = model.vae
    mean, logvar = vae.quant_conv(vae.encoder(images)).chunk(2, dim=1)
    logvar = logvar.clamp(-30.0, 20.0)
    z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator)
    reconstruction = vae.decode(z)
    # LDM first stage: reconstruction + kl_weight * KL(q(z|x) || N(0, I)), summed over latent elements, batch mean
    kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3)).mean()
    return F.l1_loss(reconstruction, images) + F.mse_loss(reconstruction, images) + kl_weight * kl


def train_vae(model: StableDiffusion, pictures: torch.Tensor, cfg: TrainConfig) -> None:
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    optimizer = torch.optim.AdamW(model.vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)

    def loss_at(step: int) -> torch.Tensor:
        batch = to_unit(pictures[torch.randint(len(pictures), (cfg.vae_batch,), generator=generator)].numpy())
        return vae_loss(model, batch, generator, cfg.kl_weight)

    optimise("vae", optimizer, cfg.vae_steps, cfg.vae_lr, cfg, loss_at)


@torch.no_grad()
def encode_all(model: StableDiffusion, pictures: torch.Tensor, batch: int = 128) -> torch.Tensor:
    return torch.cat([model.vae.encode(to_unit(pictures[i:i + batch].numpy())) for i in range(0, len(pictures), batch)])


def unet_loss(model: StableDiffusion, latents: torch.Tensor, ids: torch.Tensor, alphas: torch.Tensor,
              generator: torch.Generator) -> torch.Tensor:
    t = torch.randint(len(alphas), (len(latents),), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    a = alphas[t].float().view(-1, 1, 1, 1)
    # DDPM forward process: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps; epsilon-prediction MSE
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    return F.mse_loss(model.unet(noisy, t, model.text_encoder(ids)), noise)


def update_ema(ema: dict[str, torch.Tensor], model: StableDiffusion, decay: float) -> None:
    with torch.no_grad():
        for name, value in model.state_dict().items():
            ema[name].lerp_(value, 1.0 - decay)


def unet_parameters(model: StableDiffusion) -> list[torch.nn.Parameter]:
    return list(model.unet.parameters()) + list(model.text_encoder.parameters())


def train_unet(model: StableDiffusion, latents: torch.Tensor, ids: torch.Tensor, cfg: TrainConfig) -> dict:
    """Epsilon-prediction training with resumable checkpoints under cfg.out; returns the EMA state dict."""
    empty = CLIPTokenizer()("")[0]
    alphas = alphas_cumprod(scaled_linear_betas())
    optimizer = torch.optim.AdamW(unet_parameters(model), lr=cfg.unet_lr, weight_decay=0.01)
    state_path, start = cfg.out / "unet_state.pt", 0
    ema = copy.deepcopy(model.state_dict())
    generator = torch.Generator().manual_seed(cfg.seed + 2)
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ema, start = state["ema"], state["step"]
        generator.set_state(state["generator"])
        print(f"unet: resumed at step {start}", flush=True)
    model.vae.requires_grad_(False)

    def loss_at(step: int) -> torch.Tensor:
        pick = torch.randint(len(latents), (cfg.unet_batch,), generator=generator)
        batch_ids = ids[pick].clone()
        batch_ids[torch.rand(cfg.unet_batch, generator=generator) < cfg.caption_dropout] = empty
        return unet_loss(model, latents[pick], batch_ids, alphas, generator)

    def after_step(step: int) -> None:
        update_ema(ema, model, cfg.ema_decay)
        if (step + 1) % cfg.checkpoint_every == 0:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "ema": ema,
                        "step": step + 1, "generator": generator.get_state()}, state_path)

    optimise("unet", optimizer, cfg.unet_steps, cfg.unet_lr, cfg, loss_at, start, after_step)
    return ema


def decoder_loss(model: StableDiffusion, latents: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    reconstruction = model.vae.decode(latents)
    return F.l1_loss(reconstruction, images) + F.mse_loss(reconstruction, images)


def train_decoder(model: StableDiffusion, pictures: torch.Tensor, latents: torch.Tensor, cfg: TrainConfig) -> None:
    """L1 + L2 reconstruction from the frozen encoder's latent means (the latents the UNet was trained on)."""
    decoder = list(model.vae.decoder.parameters()) + list(model.vae.post_quant_conv.parameters())
    model.vae.requires_grad_(False)
    for parameter in decoder:
        parameter.requires_grad_(True)
    generator = torch.Generator().manual_seed(cfg.seed + 5)
    optimizer = torch.optim.AdamW(decoder, lr=cfg.decoder_lr, weight_decay=0.0)

    def loss_at(step: int) -> torch.Tensor:
        pick = torch.randint(len(pictures), (cfg.vae_batch,), generator=generator)
        return decoder_loss(model, latents[pick], to_unit(pictures[pick].numpy()))

    optimise("decoder", optimizer, cfg.decoder_steps, cfg.decoder_lr, cfg, loss_at)
    model.vae.requires_grad_(False)


@torch.no_grad()
def reconstruct(model: StableDiffusion, pictures: np.ndarray, batch: int = 128) -> torch.Tensor:
    return torch.cat([model.vae.decode(model.vae.encode(to_unit(pictures[i:i + batch]))).clamp(-1, 1)
                      for i in range(0, len(pictures), batch)])


def classifier_loss(net: SceneNet, images: torch.Tensor, shapes: torch.Tensor, one_object: torch.Tensor,
                    blood: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the shape over one-object pictures + binary cross-entropy of "shows blood" over all."""
    shape_logits, blood_logits = net(images)
    blood_loss = F.binary_cross_entropy_with_logits(blood_logits, blood.float())
    if not one_object.any():
        return blood_loss
    return F.cross_entropy(shape_logits[one_object], shapes[one_object]) + blood_loss


def train_classifier(model: StableDiffusion, cfg: TrainConfig) -> SceneNet:
    """The shape and blood CNN on scenes of their own index range, each as drawn and as the trained VAE redraws it;
    half of every batch shows blood, the shape loss counts one-object scenes only."""
    scenes, pictures = dataset(cfg.seed + 3, cfg.classifier_scenes)
    images = torch.cat([to_unit(pictures), reconstruct(model, pictures)])
    shapes = torch.tensor([SHAPES.index(s.shapes[0].kind) for s in scenes] * 2)
    one_object = torch.tensor([len(s.shapes) == 1 for s in scenes] * 2)
    blood = torch.tensor([bool(s.blood) for s in scenes] * 2)
    with_blood, without = blood.nonzero()[:, 0], (~blood).nonzero()[:, 0]
    if not len(with_blood) or not len(without):
        raise ValueError(f"classifier_scenes={cfg.classifier_scenes} drew {len(with_blood) // 2} scenes with blood and "
                         f"{len(without) // 2} without; allowed: enough scenes for both (about 10% show blood)")
    torch.manual_seed(cfg.seed + 4)
    net, generator = SceneNet(), torch.Generator().manual_seed(cfg.seed + 4)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.classifier_lr)

    def loss_at(step: int) -> torch.Tensor:
        pick = torch.cat([with_blood[torch.randint(len(with_blood), (32,), generator=generator)],
                          without[torch.randint(len(without), (32,), generator=generator)]])
        picked = images[pick]
        batch = picked + 0.05 * torch.randn(picked.shape, generator=generator)
        flip = torch.rand(64, generator=generator) < 0.5  # every shape is symmetric left to right
        batch[flip] = batch[flip].flip(-1)
        return classifier_loss(net, batch, shapes[pick], one_object[pick], blood[pick])

    optimise("classifier", optimizer, cfg.classifier_steps, cfg.classifier_lr, cfg, loss_at)
    return net.eval()


def export(model: StableDiffusion, scaling_factor: float, net: SceneNet, cfg: TrainConfig) -> Path:
    weights = {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    path = cfg.out / "toy.safetensors"
    save_file(weights, str(path), metadata={"scaling_factor": f"{scaling_factor:.5f}", "seed": str(cfg.seed),
                                            "trained_by": "scripts/train_toy.py"})
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(cfg.out / CLASSIFIER_WEIGHTS.name))
    return path


def run(cfg: TrainConfig) -> Path:
    cfg.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = StableDiffusion(TOY_SD1)
    scenes, pictures = dataset(cfg.seed, cfg.scenes)
    pictures = torch.from_numpy(pictures)
    print(f"data: {len(scenes)} scenes", flush=True)
    vae_path = cfg.out / "vae.pt"
    if vae_path.exists():
        model.vae.load_state_dict(torch.load(vae_path, weights_only=True))
    else:
        train_vae(model, pictures, cfg)
        torch.save(model.vae.state_dict(), vae_path)
    model.vae.eval()
    latents = encode_all(model, pictures)
    scaling_factor = 1.0 / latents.std().item()
    print(f"latents: std {latents.std().item():.5f}, scaling factor {scaling_factor:.5f}", flush=True)
    ids = CLIPTokenizer()([s.caption for s in scenes])
    model.load_state_dict(train_unet(model, latents * scaling_factor, ids, cfg))  # the EMA weights ship
    decoder_path = cfg.out / "decoder.pt"
    if decoder_path.exists():
        model.vae.load_state_dict(torch.load(decoder_path, weights_only=True))
    else:
        train_decoder(model, pictures, latents, cfg)
        torch.save(model.vae.state_dict(), decoder_path)
    net = train_classifier(model, cfg)
    path = export(model, scaling_factor, net, cfg)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {cfg.out / CLASSIFIER_WEIGHTS.name}", flush=True)
    return path
