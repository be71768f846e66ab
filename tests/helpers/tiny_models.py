"""Tiny random-init vision and speech models with their processors, saved as Hugging Face folders
(the pipelines' tests: real transformers classes, seconds to train on a CPU)."""

from __future__ import annotations

from pathlib import Path


def build_tiny_vit(out: Path, image_size: int = 32, seed: int = 0) -> Path:
    """A 2-layer ViT (hidden 32, patches of 8) and its processor, `image_size` square."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=64, num_labels=3)
    ViTForImageClassification(config).save_pretrained(out)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out


def build_tiny_efficientnet(out: Path, image_size: int = 32, seed: int = 0) -> Path:
    """A narrow, shallow EfficientNet (batch norm, depthwise convolutions) and its processor."""
    import torch
    from transformers import (
        EfficientNetConfig,
        EfficientNetForImageClassification,
        EfficientNetImageProcessor,
    )

    torch.manual_seed(seed)
    config = EfficientNetConfig(image_size=image_size, width_coefficient=0.25,
                                depth_coefficient=0.25, hidden_dim=320, num_labels=3)
    EfficientNetForImageClassification(config).save_pretrained(out)
    EfficientNetImageProcessor(size={"height": image_size, "width": image_size},
                               crop_size={"height": image_size, "width": image_size},
                               do_center_crop=False).save_pretrained(out)
    return out


def build_tiny_whisper(out: Path, seed: int = 0) -> Path:
    """A 1+1-layer Whisper (d_model 32) with Whisper's own feature extractor (80 log-mel bins,
    16 kHz, a 30 s window): what the audio tasks load from a real checkpoint, tiny."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    config = WhisperConfig(vocab_size=128, d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2,
                           encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                           max_source_positions=1500, max_target_positions=64,
                           decoder_start_token_id=1, pad_token_id=0, eos_token_id=2,
                           bos_token_id=1)
    WhisperForConditionalGeneration(config).save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    return out
