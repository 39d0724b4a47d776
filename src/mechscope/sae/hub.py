"""Where an SAE's folder is: a local path, a HuggingFace hub id (``"org/repo"`` plus ``sae_id``, or
``"org/repo/sub/folder"``), or a SAELens ``release`` name (when sae_lens is installed, its table maps release and
``sae_id`` to a repo and folder). Downloads fetch only the chosen folder (``snapshot_download(allow_patterns=...)``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import InputError, ModelLoadError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w.\-/]+)?$")


def split_hub_id(path: str, sae_id: str | None) -> tuple[str, str | None]:
    """``("org/repo", "sub/folder" or None)`` from ``"org/repo[/sub/folder]"`` and an optional ``sae_id`` (a folder
    inside the repo, appended)."""
    parts = path.strip("/").split("/")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:]) or None
    if sae_id:
        sub = f"{sub}/{sae_id.strip('/')}" if sub else sae_id.strip("/")
    return repo, sub


def resolve(path: str | os.PathLike, sae_id: str | None = None) -> Path:
    """The local folder holding the SAE: ``path`` itself (joined with ``sae_id``) when it exists, else a hub
    download. A sentence when neither works."""
    p = Path(path).expanduser()
    if p.exists():
        if sae_id is not None:
            q = p / sae_id
            if not q.exists():
                subs = sorted(x.name for x in p.iterdir() if x.is_dir()) if p.is_dir() else []
                raise ModelLoadError(f"{str(p)!r} has no folder {sae_id!r}"
                                     f"{'; it holds ' + ', '.join(subs[:8]) if subs else ''}.")
            return q
        return p
    s = str(path)
    if "/" not in s:
        release = _saelens_release(s, sae_id)
        if release is not None:
            return _download(*release)
        raise ModelLoadError(f"no SAE folder {s!r}: the path does not exist, and it is not a hub id 'org/repo' "
                             "(or a SAELens release name with sae_lens installed). Check the path.")
    if s.startswith((".", "/", "~")) or not _HUB_ID.match(s):
        raise ModelLoadError(f"no SAE folder {s!r}: the path does not exist. Check the path (a hub id looks like "
                             "'org/repo' or 'org/repo/folder').")
    try:
        return _download(*split_hub_id(s, sae_id))
    except ModelLoadError as e:
        raise ModelLoadError(f"there is no local folder {s!r}, so it was taken as a hub id: {e}") from None


def _saelens_release(release: str, sae_id: str | None) -> tuple[str, str | None] | None:
    """SAELens's ``(repo_id, folder)`` for a release name, when sae_lens is importable and knows it."""
    if sae_id is None:
        return None
    try:
        from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name
    except ImportError:
        return None
    try:
        repo, folder = get_repo_id_and_folder_name(release, sae_id)
    except ValueError as e:
        raise InputError(f"SAELens release {release!r}: {e}") from None
    return (repo, folder) if repo != release else None


def _download(repo: str, sub: str | None) -> Path:
    """``snapshot_download`` of ``repo`` limited to ``sub/*``; the folder it lands in."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - transformers depends on it
        raise ModelLoadError("loading an SAE from the hub needs huggingface_hub: pip install huggingface_hub."
                             ) from None
    patterns = [f"{sub}/*"] if sub else None
    try:
        root = Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as e:  # offline, unknown repo, gated repo: huggingface_hub has many error types
        offline = os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0")
        why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else f"{type(e).__name__}: {e}"
        raise ModelLoadError(f"cannot fetch the SAE {repo + ('/' + sub if sub else '')!r} from the HuggingFace hub "
                             f"({why}). Check the id and your network, or download the folder and pass its path."
                             ) from None
    folder = root / sub if sub else root
    if not folder.exists():
        raise ModelLoadError(f"the hub repo {repo!r} has no folder {sub!r}; check sae_id (the folder inside the repo).")
    return folder
