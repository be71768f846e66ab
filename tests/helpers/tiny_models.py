"""Tiny random-init vision and speech models with their processors, saved as Hugging Face folders
(the pipelines' tests: real transformers classes, seconds to train on a CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


# wav2vec2-base-960h's kind of vocabulary: the blank (padding) first, upper-case letters.
CTC_VOCAB = ("<pad>", "<s>", "</s>", "<unk>", "|", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ'")


def ctc_tokenizer(out: Path, vocab: tuple[str, ...] = CTC_VOCAB) -> Any:
    """A Wav2Vec2CTCTokenizer over `vocab` (written to `out`/vocab.json): `<pad>` the blank,
    `|` the word delimiter."""
    import json

    from transformers import Wav2Vec2CTCTokenizer

    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    return Wav2Vec2CTCTokenizer(str(out / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                word_delimiter_token="|")


def build_tiny_wav2vec2_ctc(out: Path, seed: int = 0, vocab: tuple[str, ...] = CTC_VOCAB
                            ) -> Path:
    """A 2-layer Wav2Vec2ForCTC (hidden 32, 3 convolutions: one frame per 80 samples, 5 ms)
    and its Wav2Vec2Processor: a Wav2Vec2FeatureExtractor (16 kHz, normalised, attention mask)
    and `ctc_tokenizer(vocab)`. Its loss is the checkpoint default's mean: the task sums."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    tokenizer = ctc_tokenizer(out, vocab)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=True)
    torch.manual_seed(seed)
    config = Wav2Vec2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, conv_dim=(32, 32, 32),
                            conv_stride=(5, 4, 4), conv_kernel=(10, 8, 4),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                            feat_extract_norm="layer", do_stable_layer_norm=True,
                            pad_token_id=tokenizer.pad_token_id, ctc_loss_reduction="mean")
    Wav2Vec2ForCTC(config).save_pretrained(out)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out)
    return out


def build_tiny_yolos(out: Path, seed: int = 0) -> Path:
    """A 2-layer YOLOS (a ViT with 10 detection tokens, hidden 32, patches of 16) and its
    processor, images resized to 64 px on the short side (96 at most on the long)."""
    import torch
    from transformers import YolosConfig, YolosForObjectDetection
    from transformers.models.yolos.image_processing_pil_yolos import YolosImageProcessorPil

    torch.manual_seed(seed)
    config = YolosConfig(image_size=[64, 96], patch_size=16, hidden_size=32,
                         num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         num_detection_tokens=10, num_labels=3)
    YolosForObjectDetection(config).save_pretrained(out)
    YolosImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(out)
    return out


def build_tiny_detr(out: Path, seed: int = 0) -> Path:
    """A 1+1-layer DETR (d_model 32, 10 queries) on a 2-stage ResNet of transformers' own (no
    timm), and its processor (a pixel mask for the padding), 64 px on the short side."""
    import torch
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig
    from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil

    torch.manual_seed(seed)
    backbone = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                            layer_type="basic", out_features=["stage2"])
    config = DetrConfig(use_timm_backbone=False, backbone_config=backbone,
                        use_pretrained_backbone=False, d_model=32, encoder_layers=1,
                        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                        encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10, num_labels=3)
    DetrForObjectDetection(config).save_pretrained(out)
    DetrImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(out)
    return out


def build_tiny_segformer(out: Path, image_size: int = 64, labels: int = 21, seed: int = 0,
                         random_layers: bool = True) -> Path:
    """A SegFormer of one block per stage (hidden 8..32, 48k parameters) and its processor,
    `image_size` square: what `nvidia/segformer-b0-*` checkpoints load as, tiny. Without
    `random_layers`, no dropout nor stochastic depth: runs that differ only in how they are
    distributed then compute the same thing."""
    import torch
    from transformers import (
        SegformerConfig,
        SegformerForSemanticSegmentation,
        SegformerImageProcessor,
    )

    torch.manual_seed(seed)
    config = SegformerConfig(depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1],
                             hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 2, 2],
                             mlp_ratios=[2, 2, 2, 2], decoder_hidden_size=32, num_labels=labels,
                             **({} if random_layers else dict(
                                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                 classifier_dropout_prob=0.0, drop_path_rate=0.0)))
    SegformerForSemanticSegmentation(config).save_pretrained(out)
    SegformerImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out


def build_tiny_deeplab(out: Path, image_size: int = 64, labels: int = 21, seed: int = 0) -> Path:
    """MobileNetV2's DeepLabV3 (depth x0.25) and its processor (shortest edge, centre crop)."""
    import torch
    from transformers import (
        MobileNetV2Config,
        MobileNetV2ForSemanticSegmentation,
        MobileNetV2ImageProcessor,
    )

    torch.manual_seed(seed)
    config = MobileNetV2Config(depth_multiplier=0.25, image_size=image_size, num_labels=labels)
    MobileNetV2ForSemanticSegmentation(config).save_pretrained(out)
    MobileNetV2ImageProcessor(size={"shortest_edge": image_size},
                              crop_size={"height": image_size, "width": image_size}
                              ).save_pretrained(out)
    return out
