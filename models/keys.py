"""Where each part of a model lives in the original CompVis single-file layout: the one home of these key prefixes.

Every module that reads, converts, detects or reports checkpoint parts names them through this module.
"""

UNET = "model.diffusion_model."
VAE = "first_stage_model."
TEXT = "cond_stage_model."  # the text tower, whichever kind
CLIP = TEXT + "transformer.text_model."  # OpenAI CLIP as transformers' CLIPTextModel names it (SD 1)
OLD_CLIP = TEXT + "transformer."  # old transformers CLIPTextModel files have no `text_model.` level
OPENCLIP = TEXT + "model."  # open_clip's names (SD 2)
EMA = "model_ema."  # EMA copies of the UNet weights, dots removed from the rest of the name
EMA_BOOKKEEPING = (EMA + "decay", EMA + "num_updates")
VAE_TRAINING = VAE + "loss."  # the autoencoder's discriminator and perceptual loss
SDXL_CONDITIONER = "conditioner.embedders."  # SDXL's text towers, sgm's names
SDXL_CLIP = SDXL_CONDITIONER + "0.transformer.text_model."  # CLIP ViT-L (transformers' names)
SDXL_OPENCLIP = SDXL_CONDITIONER + "1.model."  # OpenCLIP ViT-bigG (open_clip's names)
SDXL_REFINER_OPENCLIP = SDXL_CONDITIONER + "0.model."  # the refiner conditions on OpenCLIP alone
SDXL_LABEL_EMBEDDING = UNET + "label_emb."  # SDXL's vector conditioning (pooled text ; micro-conditioning)
