"""Sharing transforms through the Hugging Face Hub (huggingface-hub, imported lazily).

Downloads go through `hf_hub_download`: cached the Hub way, HF_HUB_OFFLINE and HF_ENDPOINT
honored, pinned by revision when asked. lingalign then checks the cached file against the
ETag the Hub gave it (sha256 for LFS files, git blob sha1 otherwise; the cache names each blob
by it), loads it with full validation, and checks it against the model it will be applied to.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from .errors import LingalignError, TransformFileError
from .model import ModelFingerprint
from .transform import Transform

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")


class HubError(LingalignError):
    """A Hub operation failed (network, missing repository or file, offline without a cache)."""


def verify_cached_blob(path: Path) -> None:
    """Check a file from the Hub cache against the ETag its blob is named by."""
    blob = Path(os.path.realpath(path))
    etag = blob.name
    data = blob.read_bytes()
    if _SHA256.match(etag):
        actual = hashlib.sha256(data).hexdigest()
    elif _SHA1.match(etag):
        actual = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    else:
        raise TransformFileError(f"{path}: cannot verify the download (the Hub gave no checksum ETag: {etag!r})")
    if actual != etag:
        raise TransformFileError(f"{path}: corrupted download (checksum {actual[:12]} does not match the Hub's {etag[:12]})")


def _pick_file(repo_id: str, revision: str | None) -> str:
    from huggingface_hub import HfApi

    try:
        files = [f for f in HfApi().list_repo_files(repo_id, revision=revision) if f.endswith(".gguf")]
    except Exception as e:
        raise HubError(f"cannot list {repo_id}: {_describe(e)} (pass --file NAME, which also works offline)") from None
    if len(files) != 1:
        listing = ", ".join(files) if files else "none"
        raise HubError(f"{repo_id} has {len(files)} .gguf files ({listing}): choose one with --file")
    return files[0]


def _describe(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def pull(
    repo_id: str,
    *,
    filename: str | None = None,
    revision: str | None = None,
    model: ModelFingerprint | None = None,
    force: bool = False,
) -> tuple[Path, Transform, list[str]]:
    """Download (or find in the cache) a transform, verify it, and check it fits `model`.

    Returns (cached path, transform, warnings). Raises HubError or TransformFileError /
    ModelMismatchError with a one-line message.
    """
    from huggingface_hub import hf_hub_download

    name = filename or _pick_file(repo_id, revision)
    try:
        path = Path(hf_hub_download(repo_id, name, revision=revision))
    except Exception as e:
        raise HubError(f"cannot download {name} from {repo_id}: {_describe(e)}") from None
    verify_cached_blob(path)
    transform = Transform.load(path)
    warnings = transform.model.check(model, force=force) if model is not None else []
    return path, transform, warnings


def model_card(transform: Transform, filename: str) -> str:
    """A README.md for the Hub: what the transform is, what it fits, how it was made."""
    m = transform.model
    info = transform.fit_info
    lines = [
        "---",
        "library_name: lingalign",
        "tags:",
        "- lingalign",
        "- gguf",
        "- cross-lingual-alignment",
        "---",
        "",
        f"# {transform.source_lang or '?'} -> {transform.target_lang} alignment transform for {m.name or m.architecture}",
        "",
        f"A [lingalign](https://pypi.org/project/lingalign/) transform (`{filename}`): per-layer maps applied to the",
        "residual stream inside llama.cpp, moving the model's hidden states for the source language toward English.",
        "",
        "```sh",
        f"lingalign pull REPO_ID --file {filename}",
        f"lingalign run --transform {filename} -p '...'",
        "```",
        "",
        "| | |",
        "|---|---|",
        f"| method | {transform.method} |",
        f"| layers | {', '.join(str(il) for il in sorted(transform.layers))} |",
        f"| kinds | {', '.join(sorted({lm.kind for lm in transform.layers.values()}))} |",
        f"| default alpha / positions | {transform.alpha:g} / {transform.positions} |",
        f"| model | {m.name or '?'} ({m.architecture}, n_embd {m.n_embd}, n_layer {m.n_layer}) |",
        f"| model vocabulary sha256 | `{m.vocab_sha256}` |",
        f"| model weights fingerprint | `{m.weights_sha256}` |",
    ]
    for key in sorted(info):
        if key != "measured":
            lines.append(f"| fit.{key} | {info[key]} |")
    measured = info.get("measured")
    if isinstance(measured, dict) and measured:
        lines += ["", "## Measured", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(measured.items())]
    return "\n".join(lines) + "\n"


def push(path: str | os.PathLike[str], repo_id: str, *, private: bool = False, api: Any = None) -> str:
    """Upload a transform and a model card to a Hub model repository; returns the commit URL.

    The file is validated first: nothing invalid is published.
    """
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    p = Path(path)
    transform = Transform.load(p)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_file(path_or_fileobj=str(p), path_in_repo=p.name, repo_id=repo_id, repo_type="model",
                        commit_message=f"lingalign: add {p.name}")
        info = api.upload_file(path_or_fileobj=model_card(transform, p.name).encode("utf-8"), path_in_repo="README.md",
                               repo_id=repo_id, repo_type="model", commit_message="lingalign: model card")
    except LingalignError:
        raise
    except Exception as e:
        raise HubError(f"cannot push to {repo_id}: {_describe(e)}") from None
    return str(info)


def local_transforms(extra_dirs: list[Path] | None = None) -> list[dict[str, Any]]:
    """Transforms available locally: in the Hugging Face cache and in `extra_dirs`, with the
    model each fits. Files that are not valid transforms are listed with their problem."""
    paths: list[tuple[str, Path]] = []
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            for rev in repo.revisions:
                for f in rev.files:
                    if f.file_name.endswith(".gguf"):
                        paths.append((f"hub:{repo.repo_id}@{rev.commit_hash[:8]}", Path(f.file_path)))
    except Exception:  # no cache yet
        pass
    from .data import shipped_dir

    for d in extra_dirs or []:
        origin = "shipped" if Path(d) == shipped_dir() else f"dir:{d}"
        for p in sorted(Path(d).glob("*.gguf")):
            paths.append((origin, p))
    out = []
    for origin, p in paths:
        entry: dict[str, Any] = {"origin": origin, "path": str(p)}
        try:
            t = Transform.load(p)
            entry.update(source_lang=t.source_lang, target_lang=t.target_lang, method=t.method,
                         model=t.model.name or t.model.architecture, vocab_sha256=t.model.vocab_sha256[:12])
        except TransformFileError as e:
            entry["error"] = str(e)
        out.append(entry)
    return out
