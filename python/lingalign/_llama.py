"""Every touch of llama-cpp-python's internals, in one place.

lingalign needs a few things llama-cpp-python does not offer publicly: a context created with
cb_eval set (it can only be set at creation), swapping a Llama's context for such a one (and
back), invalidating a Llama's cached prompt, and raw llama_batch / llama_decode access for
whole-batch work. They rely on private attributes of llama_cpp.Llama (`_ctx`, `_model`,
`_stack`, `_lora_adapter`, `_requires_eval`) and on `llama_cpp._internals`, as of
llama-cpp-python 0.3.36 (the version the C++ extension is pinned to). Nothing else in lingalign
reads those.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

import llama_cpp
from llama_cpp import _internals as llama_internals

from .errors import LingalignError

LlamaContext = llama_internals.LlamaContext
LlamaBatch = llama_internals.LlamaBatch


@contextlib.contextmanager
def quiet_llama_log(verbose: bool) -> Iterator[None]:
    """Silence llama.cpp's log while lingalign creates or frees a context for a non-verbose Llama.

    llama-cpp-python prints llama.cpp warnings at its ERROR level; a failure still raises.
    """
    logger = logging.getLogger("llama-cpp-python")
    old = logger.level
    quiet = logging.CRITICAL + 1
    if not verbose:
        logger.setLevel(quiet)
    try:
        yield
    finally:
        # Llama() sets the level itself (set_verbose): keep that rather than the level from before
        # the first Llama (NOTSET, which would print everything llama.cpp logs from then on).
        if verbose or logger.level == quiet:
            logger.setLevel(old)


# -- facts about a loaded model ----------------------------------------------------------------
def n_embd(llm: llama_cpp.Llama) -> int:
    return int(llama_cpp.llama_model_n_embd(llm.model))


def n_layer(llm: llama_cpp.Llama) -> int:
    return int(llama_cpp.llama_model_n_layer(llm.model))


def n_vocab(llm: llama_cpp.Llama) -> int:
    return int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model)))


def n_ctx_train(llm: llama_cpp.Llama) -> int:
    return int(llama_cpp.llama_model_n_ctx_train(llm.model))


def max_parallel_sequences() -> int:
    return int(llama_cpp.llama_max_parallel_sequences())


def kernel_threads(llm: llama_cpp.Llama) -> int:
    """Threads for lingalign's map kernel: llama.cpp's batch threads, idle while the callback runs."""
    p = llm.context_params
    return max(1, min(512, int(p.n_threads_batch or p.n_threads or 1)))


# -- contexts with lingalign's callback ------------------------------------------------------------
def hooked_params(base: llama_cpp.llama_context_params, callback_address: int, hook_address: int) -> tuple[Any, Any]:
    """A copy of `base` with cb_eval = the C function at callback_address and its user data;
    returns (params, callback object): keep the callback referenced while the context lives."""
    params = llama_cpp.llama_context_params()
    ctypes.pointer(params)[0] = base  # copy every field, then install the callback
    callback = llama_cpp.ggml_backend_sched_eval_callback(callback_address)
    params.cb_eval = callback
    params.cb_eval_user_data = ctypes.c_void_p(hook_address)
    return params, callback


def new_context(llm: llama_cpp.Llama, params: Any, cls: type = LlamaContext, **kwargs: Any) -> Any:
    """A context of class `cls` (LlamaContext or a subclass) on llm's model with `params`."""
    with quiet_llama_log(llm.verbose):
        return cls(model=llm._model, params=params, verbose=llm.verbose, **kwargs)


def close_context(llm: llama_cpp.Llama, ctx: Any) -> None:
    with quiet_llama_log(llm.verbose):
        ctx.close()


def replace_context(llm: llama_cpp.Llama, ctx: Any) -> None:
    """Make `ctx` the Llama's context (closing the old one), with the Llama's LoRA adapter applied
    again and its prompt cache invalidated."""
    old = llm._ctx
    if getattr(llm, "_lora_adapter", None) is not None:
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(llm._lora_adapter)
        scales = (ctypes.c_float * 1)(llm.lora_scale)
        if llama_cpp.llama_set_adapters_lora(ctx.ctx, adapters, 1, scales):
            ctx.close()
            raise LingalignError("could not re-apply the Llama's LoRA adapter to the new context")
    llm._ctx = ctx
    llm._stack.enter_context(contextlib.closing(ctx))
    close_context(llm, old)
    invalidate_cache(llm)


def plain_context(llm: llama_cpp.Llama) -> Any:
    """A new context of llama.cpp's own (no callback) with the Llama's parameters."""
    return new_context(llm, llm.context_params)


def current_context(llm: llama_cpp.Llama) -> Any:
    return llm._ctx


def swap_context(llm: llama_cpp.Llama, ctx: Any) -> None:
    """Point the Llama at another open context without closing the current one (benchmarks:
    they cut the KV cache back themselves)."""
    llm._ctx = ctx


def supports_gpu_offload() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


def invalidate_cache(llm: llama_cpp.Llama) -> None:
    """The KV cache holds states computed under other settings: re-evaluate the prompt next time."""
    llm.n_tokens = 0
    llm._requires_eval = True


def truncate_cache(llm: llama_cpp.Llama, pos: int) -> None:
    """Cut the Llama's KV cache back to its first `pos` tokens."""
    llm._ctx.kv_cache_seq_rm(-1, pos, -1)
    llm.n_tokens = pos


# -- whole-batch work: capture, choice scoring ------------------------------------------------------
# llama.cpp sizes a context's compute buffer for n_ubatch rows of n_vocab-wide logits (about
# 515 MiB at 512 for Gemma 3's 262k vocabulary): 256 halves it. A decode of up to n_batch tokens
# runs as several ubatches, which the hook follows.
BATCH_UBATCH_TOKENS = 256


def batch_context_params(llm: llama_cpp.Llama, *, n_batch: int, n_seq: int, embeddings: bool) -> Any:
    """Parameters of a context for whole-batch work: n_batch tokens per decode, n_seq sequences in
    one unified KV stream (so llama.cpp keeps batch order), llm's thread counts. embeddings=True
    makes outputs n_embd wide (no n_vocab-wide logits buffer)."""
    base = llama_cpp.llama_context_default_params()
    base.n_ctx = n_batch
    base.n_batch = n_batch
    base.n_ubatch = min(n_batch, BATCH_UBATCH_TOKENS)
    base.n_seq_max = n_seq
    base.kv_unified = True
    base.n_threads = llm.context_params.n_threads
    base.n_threads_batch = llm.context_params.n_threads_batch
    base.embeddings = embeddings
    return base


def n_ubatch(ctx: Any) -> int:
    return int(llama_cpp.llama_n_ubatch(ctx.ctx))


def new_batch(n_tokens: int, n_seq_max: int) -> Any:
    return LlamaBatch(n_tokens=n_tokens, embd=0, n_seq_max=n_seq_max, verbose=False)


def decode(ctx: Any, batch: Any) -> int:
    """llama_decode of a llama_batch (the ctypes struct) in ctx; its return code."""
    return int(llama_cpp.llama_decode(ctx.ctx, batch))


def output_logits(ctx: Any, n_out: int, n_vocab: int) -> np.ndarray:
    """The last decode's logits, [n_out, n_vocab] float32 (a view into llama.cpp's buffer)."""
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx.ctx), shape=(n_out, n_vocab))


def batch_logits_address(batch: Any) -> int:
    """Address of a llama_batch's int8 logits flags (for the hook's set_batch_from_logits)."""
    return ctypes.cast(batch.logits, ctypes.c_void_p).value or 0


class HookedContext(LlamaContext):
    """A LlamaContext created with lingalign's cb_eval whose every decode goes through
    `announcer.decode(batch, run, n_ubatch)`: the announcer tells the hook about the batch (a
    llama_batch struct), calls run() to decode it, and checks the hook afterwards."""

    def __init__(self, *, model: Any, params: Any, verbose: bool, announcer: Any, callback: Any) -> None:
        self.announcer = announcer  # owns the hook, which must outlive the native context
        self._callback = callback  # the ctypes function pointer object stays referenced
        super().__init__(model=model, params=params, verbose=verbose)
        self.n_ubatch = int(llama_cpp.llama_n_ubatch(self.ctx))

    def decode(self, batch: Any) -> None:
        self.announcer.decode(batch.batch, lambda: LlamaContext.decode(self, batch), self.n_ubatch)

    def close(self) -> None:
        with quiet_llama_log(self.verbose):
            super().close()  # frees the native context: no callback can run after this
        self.announcer = None


def hooked_context(llm: llama_cpp.Llama, callback_address: int, hook_address: int, announcer: Any) -> HookedContext:
    """A HookedContext on llm's model with llm's own context parameters."""
    params, callback = hooked_params(llm.context_params, callback_address, hook_address)
    return new_context(llm, params, HookedContext, announcer=announcer, callback=callback)


def wrap_generation(llm: llama_cpp.Llama, eval_fn: Any, generate_fn: Any) -> tuple[Any, Any]:
    """Route llm.eval and llm.generate through eval_fn / generate_fn (instance attributes);
    returns the originals."""
    originals = (llm.eval, llm.generate)
    llm.eval = eval_fn  # type: ignore[method-assign]
    llm.generate = generate_fn  # type: ignore[method-assign]
    return originals


def unwrap_generation(llm: llama_cpp.Llama) -> None:
    for name in ("eval", "generate"):
        llm.__dict__.pop(name, None)


_GGML_LOG_ERROR, _GGML_LOG_CONT = 4, 5  # ggml.h enum ggml_log_level
_log_state = {"last": 0}
_log_callback: Any = None


def install_error_only_log() -> None:
    """Let llama.cpp print only its errors in this process (the CLI's, which owns it).

    llama-cpp-python 0.3.36 maps ggml's log levels from an older enum: it prints llama.cpp's
    warnings and info lines and hides its errors. The library leaves the host application's
    logging alone; the CLI replaces that callback.
    """
    global _log_callback
    import sys

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level != _GGML_LOG_CONT:
            _log_state["last"] = level
        if _log_state["last"] == _GGML_LOG_ERROR:
            sys.stderr.write(text.decode("utf-8", errors="replace"))

    _log_callback = callback  # must stay referenced while llama.cpp may call it
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def has_chat_template(llm: llama_cpp.Llama) -> bool:
    """Whether the model's GGUF carries a chat template (an instruct model)."""
    return bool(llm.metadata.get("tokenizer.chat_template"))


def chat_text(llm: llama_cpp.Llama, user_message: str) -> str:
    """A one-turn conversation in the model's own chat template, ending where the assistant's
    answer starts (the text create_chat_completion would evaluate)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise LingalignError("this model has no chat template")

    def piece(token: int) -> str:
        return llm._model.token_get_text(token) if token >= 0 else ""

    bos, eos = piece(int(llm.token_bos())), piece(int(llm.token_eos()))
    formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
    return formatter(messages=[{"role": "user", "content": user_message}]).prompt
