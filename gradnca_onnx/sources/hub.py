"""The local Hugging Face cache: where a Hub name's files are, never downloaded.

timm (``timm:hf-hub:ORG/NAME``), Hugging Face (``hf:ORG/NAME``) and open_clip
(``open_clip:hf-hub:ORG/NAME``) read a Hub model from the cache a machine with internet
filled (``huggingface-cli download``); nothing here reaches the network.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SourceError, optional_import


def hf_cache_dir() -> str:
    """The Hugging Face cache as the environment says now (``huggingface_hub`` reads it once,
    at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def hub_directory(hub_id: str, option: str, instead: str, *,
                  marker: str = "config.json") -> Path:
    """The cached snapshot directory of ``ORG/NAME[@REVISION]``, never downloaded.

    Parameters
    ----------
    hub_id : str
        ``ORG/NAME``, optionally ``@REVISION`` (a branch, tag or commit of the cache's refs).
    option : str
        How the user named it, for the message (``--arch timm:hf-hub:``).
    instead : str
        What to give instead when it is not cached (a local directory).
    marker : str, default="config.json"
        A file the snapshot must hold.

    Raises
    ------
    SourceError
        Not in the cache (one line: where the cache is and how to fill it).
    """
    hub = optional_import("huggingface_hub", "zoo", f"{option}{hub_id}")
    repo, _, revision = hub_id.partition("@")
    cache = hf_cache_dir()
    found = None
    if repo.count("/") == 1 and all(repo.split("/")):
        found = hub.try_to_load_from_cache(repo, marker, cache_dir=cache,
                                           revision=revision or None)
    if not isinstance(found, str):
        raise SourceError(f"{option}{hub_id}: not in the local Hugging Face cache ({cache}; "
                          f"nothing is downloaded, and {marker} is not cached there): put the "
                          "model there (huggingface-cli download on a machine with internet, "
                          "then copy the cache; HF_HUB_CACHE names it), or give its directory "
                          f"as {instead}")
    return Path(found).parent


#: The prefix of a local directory reference (``timm:local-dir:DIR``, ``open_clip:...``).
LOCAL_DIR = "local-dir:"


def is_directory_reference(name: str) -> bool:
    """Whether a timm or open_clip reference names a local directory: their own model names
    never hold a path separator, and a Hub name is ``hf-hub:ORG/NAME``."""
    if name.startswith("hf-hub:"):
        return False
    return name.startswith(LOCAL_DIR) or "/" in name or os.sep in name


def recorded_directory(name: str) -> str:
    """How a manifest records the directory reference ``name``: ``local-dir:`` and the
    directory's own name, never its path (a zoo names nothing outside it; the member is
    rebuilt from a directory of that name beside it, or the one given)."""
    return LOCAL_DIR + Path(name.removeprefix(LOCAL_DIR)).name
