"""Checkpoint references of the pool configs: a local path, or a Hugging Face hub repository downloaded once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def is_repo_id(ref: str) -> bool:
    """True when ``ref`` is shaped like a hub repository id (``name`` or ``owner/name``), not a file path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(str(ref))
    except HFValidationError:
        return False
    return True


def resolve(ref: str | Path, allow_patterns: Sequence[str], revision: str | None = None,
            key: str = "the pool entry") -> Path:
    """A local directory for ``ref``: an existing path as is, or a hub repository (``allow_patterns`` files only).

    ``key`` names the config setting that holds ``ref``; a missing path, a malformed id or a failed download is a
    FileNotFoundError (one line from the ``devec`` command) that says to set it.
    """
    path = Path(str(ref)).expanduser()
    if path.exists():
        return path
    if not is_repo_id(str(ref)):
        raise FileNotFoundError(f"checkpoint {str(ref)!r} is neither an existing local path nor a hub repository id "
                                f"(owner/name): set {key} to a local checkpoint directory or a hub id")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(ref), revision=revision, allow_patterns=list(allow_patterns)))
    except Exception as err:  # noqa: BLE001 - report any hub failure with what to change
        raise FileNotFoundError(f"could not download {str(ref)!r} from the hub ({type(err).__name__}: "
                           f"{_first_line(err)}); set {key} to a local checkpoint directory") from None


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0][:200]
