"""Exceptions lingalign raises on bad input. Each message names the problem in one line."""

from __future__ import annotations


class LingalignError(Exception):
    """Base class of every error lingalign raises for bad input or misuse."""


class TransformFileError(LingalignError, ValueError):
    """A transform file is missing, not a lingalign transform, truncated, corrupt or inconsistent."""


class ModelFileError(LingalignError, ValueError):
    """A model file is missing or is not a readable GGUF model."""


class ModelMismatchError(LingalignError):
    """A transform was made for another model than the one it is applied to."""


class InterventionError(LingalignError, RuntimeError):
    """The hook could not apply a transform during a decode (reported after the decode)."""


class RequestError(LingalignError, ValueError):
    """A server request's `lingalign` field is malformed or names what the server does not offer
    (lingalign serve answers HTTP 400 with the message)."""
