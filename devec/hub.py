"""Checkpoint and dataset references of the configs: a local path, a Hugging Face hub repository downloaded once,
or, with ``paths.hub_mirror`` set, that repository's copy in a local mirror (``<mirror>/<owner>/<name>``).

Downloads go through huggingface_hub's ``snapshot_download`` into its cache (HF_HOME / HF_HUB_CACHE), with a
progress bar per file. An interrupted download resumes file by file: the files already complete are kept and not
fetched again; the file that was in flight starts over (huggingface_hub 1.x/2.x writes it to a process-unique
temporary file and deletes that on failure; it resumes a broken connection only within the same run). A mirror is
what a machine behind a firewall, or one with the repositories copied in advance, uses instead: nothing is
downloaded, and a repository missing from it is an error naming the directory expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

_MIRROR: Path | None = None
MIRROR_KEY = "paths.hub_mirror"


def set_mirror(path: str | Path | None) -> None:
    """Use ``path`` as the hub mirror from now on (``devec.cli.execute`` sets ``paths.hub_mirror``); None: the hub."""
    global _MIRROR
    if path in (None, ""):
        _MIRROR = None
        return
    root = Path(str(path)).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{MIRROR_KEY}={str(path)!r} is not a directory: give a folder laid out as "
                                f"<mirror>/<owner>/<name> (one per model repository or dataset), or null for the hub")
    _MIRROR = root


def mirror() -> Path | None:
    """The hub mirror in use, or None."""
    return _MIRROR


def mirror_path(ref: str, root: Path | None = None) -> Path:
    """Where the mirror ``root`` (default: the one in use) holds the repository ``ref`` (``owner/name``)."""
    root = root if root is not None else _MIRROR
    if root is None:
        raise ValueError(f"no hub mirror is set ({MIRROR_KEY}=null)")
    return root.joinpath(*str(ref).split("/"))


def is_repo_id(ref: str) -> bool:
    """True when ``ref`` is shaped like a hub repository id (``name`` or ``owner/name``), not a file path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(str(ref))
    except HFValidationError:
        return False
    return True


def is_remote(ref: str | Path) -> bool:
    """True when ``ref`` names a hub repository (not an existing local path): something to fetch."""
    return not Path(str(ref)).expanduser().exists() and is_repo_id(str(ref))


def mirrored(ref: str, key: str) -> Path:
    """The mirror's directory for hub id ``ref`` (the setting ``key`` holds it); an error naming the path expected."""
    local = mirror_path(ref)
    if not local.is_dir():
        raise FileNotFoundError(f"{key}={ref!r} is not in the hub mirror: expected the directory {local} "
                                f"({MIRROR_KEY}={str(_MIRROR)!r}); copy it there, e.g. `huggingface-cli download "
                                f"{ref} --local-dir {local}` (add --repo-type dataset for a dataset), or set "
                                f"{MIRROR_KEY}=null to download from the hub")
    return local


def dataset(ref: str, key: str) -> str:
    """What to hand ``datasets.load_dataset`` for ``ref``: the mirror's copy when a mirror is set, else ``ref``."""
    if _MIRROR is None or not is_remote(ref):
        return str(ref)
    return str(mirrored(str(ref), key))


def model(ref: str, key: str) -> str:
    """What to hand a ``from_pretrained`` for ``ref``: the mirror's copy when a mirror is set, else ``ref``."""
    return dataset(ref, key)


def resolve(ref: str | Path, allow_patterns: Sequence[str], revision: str | None = None,
            key: str = "the pool entry") -> Path:
    """A local directory for ``ref``: an existing path as is, the mirror's copy of a hub repository when
    ``paths.hub_mirror`` is set, else the repository downloaded (``allow_patterns`` files only).

    ``key`` names the config setting that holds ``ref``; a missing path, a malformed id, a repository missing from
    the mirror or a failed download is a FileNotFoundError (one line from the ``devec`` command) that says what to set.
    """
    path = Path(str(ref)).expanduser()
    if path.exists():
        return path
    if not is_repo_id(str(ref)):
        raise FileNotFoundError(f"checkpoint {str(ref)!r} is neither an existing local path nor a hub repository id "
                                f"(owner/name): set {key} to a local checkpoint directory or a hub id")
    if _MIRROR is not None:
        return mirrored(str(ref), key)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(ref), revision=revision, allow_patterns=list(allow_patterns)))
    except Exception as err:  # noqa: BLE001 - report any hub failure with what to change
        raise FileNotFoundError(f"could not download {str(ref)!r} from the hub ({type(err).__name__}: "
                                f"{_first_line(err)}); set {key} to a local checkpoint directory, or "
                                f"{MIRROR_KEY} to a local mirror") from None


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0][:200]
