"""One batch runner for whole-batch work: capture, choice scoring and the capture benchmark.

A context of its own on a Llama's model (the weights are shared), several sequences per
llama_decode in one unified KV stream (so llama.cpp keeps batch order, which the hook relies on
to know which token each row is), and optionally lingalign's hook as cb_eval. Each decode is
announced to the hook first (one flag byte per token, and capture slots).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _llama
from ._abi import _core
from .errors import LingalignError


class BatchRunner:
    """Decodes llama_batches of up to n_batch tokens in a context with `hook` (or none: plain
    llama.cpp, for baselines). Fill `batch` (a LlamaBatch whose tokens may belong to up to
    `seqs_per_token` sequences), then call `decode`. Close it (or use it as a context manager)."""

    def __init__(self, llm: Any, hook: Any | None, *, n_batch: int, n_seq: int, embeddings: bool,
                 seqs_per_token: int = 1) -> None:
        self._llm = llm
        self.hook = hook
        params = _llama.batch_context_params(llm, n_batch=n_batch, n_seq=n_seq, embeddings=embeddings)
        self._callback = None
        if hook is not None:
            params, self._callback = _llama.hooked_params(params, _core.CALLBACK_ADDRESS, hook.address)
        self.ctx = _llama.new_context(llm, params)
        self.n_ubatch = _llama.n_ubatch(self.ctx)
        self.n_batch = n_batch
        self.batch = _llama.new_batch(n_batch, seqs_per_token)

    def decode(self, flags: np.ndarray | None = None, slots: np.ndarray | None = None, *,
               task: str = "decode", doing: str = "decoding") -> None:
        """llama_decode of the filled batch, announced to the hook with `flags` (one byte per
        token) and `slots` (capture slot per token). A hook error or a failed decode raises
        LingalignError: "<task> failed: ..." or "llama_decode failed ... while <doing>"."""
        batch = self.batch.batch
        if self.hook is None:
            rc = _llama.decode(self.ctx, batch)
        else:
            if flags is None:
                raise LingalignError("a hooked decode needs the tokens' flags")
            self.hook.set_batch(self.n_ubatch, flags, slots)
            try:
                rc = _llama.decode(self.ctx, batch)
            finally:
                self.hook.end_batch()
            error = self.hook.take_error()
            if error:
                raise LingalignError(f"{task} failed: {error}")
        if rc != 0:
            raise LingalignError(f"llama_decode failed with code {rc} while {doing}")

    def logits(self, n_out: int) -> np.ndarray:
        """[n_out, n_vocab] logits of the last decode's outputs, in batch order."""
        return _llama.output_logits(self.ctx, n_out, _llama.n_vocab(self._llm))

    def clear(self) -> None:
        """Forget the sequences decoded so far (the next batch starts at position 0)."""
        self.ctx.kv_cache_clear()

    def close(self) -> None:
        if self.ctx is None:
            return
        self.batch.close()
        _llama.close_context(self._llm, self.ctx)  # no callback can run after this
        self.ctx = None
        self._callback = None

    def __enter__(self) -> BatchRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
