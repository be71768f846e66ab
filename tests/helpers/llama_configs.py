"""Llama 2 7B and 70B as their config.json files say, and their exact parameter counts: the
shapes the memory plan's unit tests size."""

from __future__ import annotations

LLAMA_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False,
}
LLAMA_70B = {
    **LLAMA_7B, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
    "num_attention_heads": 64, "num_key_value_heads": 8,
}
P_7B = 6_738_415_616
P_70B = 68_976_648_192
