"""Models named by Hub id (`org/name`): found in, or fetched into, the Hugging Face cache on the
machine that plans the run, so every worker reads a local folder (torch-free).

The launch machine usually has the network and compute nodes often do not: the snapshot is
downloaded here into `HF_HOME` (shared with the nodes on a cluster) and the plan records its
local folder; the job itself never contacts the Hub (its environment sets HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

from launcher.contract.errors import RecipeError

# What a training run reads from a model repository: configs, tokenizer, safetensors weights.
FILES = ("*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken")


def is_hub_id(value: str) -> bool:
    """`org/name`: one slash, not a path (resolved local paths are absolute)."""
    org, slash, name = value.partition("/")
    return bool(slash and org and name and "/" not in name and not value.startswith((".", "~")))


def hub_snapshot(repo_id: str, revision: str | None, recipe_file: str, key: str) -> str:
    """The local folder of `repo_id` at `revision` in the Hugging Face cache, downloaded first
    when it is not there (offline, HF_HUB_OFFLINE=1: the cache alone)."""
    from huggingface_hub import constants, snapshot_download

    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=list(FILES))
    except Exception as err:  # offline and not cached, unknown repo or revision, no network
        cache = constants.HF_HUB_CACHE
        raise RecipeError(
            recipe_file, key,
            f"{repo_id}{'@' + revision if revision else ''} is not in the Hugging Face cache "
            f"({cache}) and could not be downloaded ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'})",
            "run where the Hub is reachable once (with the same HF_HOME), log in for a gated "
            "model (huggingface-cli login), or give a local folder") from None
