"""Hugging Face Hub ids (`org/name`): fetch the model's files into the standard HF cache, or say why not.

Only what herd reads is fetched (configs, safetensors, tokenizer files), not the duplicate `original/*.pth`.
"""

from __future__ import annotations

import re
from pathlib import Path

from herd.checkpoint.files import one_line
from herd.errors import HerdError

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "original/tokenizer.model"]


def is_hub_id(name: str) -> bool:
    """Whether `name` has the shape of a Hub model id (`org/name`); the caller rules out local paths first."""
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name


def download(repo_id: str) -> Path:
    """The local snapshot directory of `repo_id`, downloaded unless cached (token and cache from the environment)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    local_copy = "or pass a local copy: herd.load('/path/to/dir')"
    try:
        return Path(snapshot_download(repo_id, allow_patterns=ALLOW_PATTERNS))
    except GatedRepoError:
        raise HerdError(
            f"no access to gated model {repo_id!r}: accept its license on https://huggingface.co/{repo_id} and set "
            f"HF_TOKEN, {local_copy}"
        ) from None
    except RepositoryNotFoundError:
        raise HerdError(
            f"{repo_id!r} is neither a local directory nor a Hub model you can access: check the name, set HF_TOKEN "
            f"if it is private, {local_copy}"
        ) from None
    except LocalEntryNotFoundError as e:
        if constants.HF_HUB_OFFLINE:
            reason = "is not in the local Hugging Face cache (HF_HUB_OFFLINE=1 forbids downloading it)"
        else:
            reason = f"is not cached and the Hub is unreachable ({one_line(e)})"
        raise HerdError(
            f"{repo_id!r} is not a local directory, and as a Hub id it {reason}: download it where there is "
            f"network, {local_copy}"
        ) from None
    except (HfHubHTTPError, OSError) as e:
        raise HerdError(f"cannot fetch {repo_id!r} from the Hugging Face Hub: {one_line(e)}; {local_copy}") from None
