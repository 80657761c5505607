"""Attach the C++ hook to a llama_cpp.Llama and control the intervention between calls.

`attach(llm)` gives `llm` a fresh llama.cpp context whose cb_eval is lingalign's C++ callback
(cb_eval can only be set when a context is created; the model weights are shared, not reloaded).
`llm(prompt)`, `create_completion` and `create_chat_completion` then run unchanged with the
transform on. While no transform is set the hook asks llama.cpp for no tensor, so the graph is
not split and speed is that of plain llama.cpp.

Position policies need to know which token each row is. Every llama_decode of the Llama goes
through `_HookedContext.decode`, which announces the batch to the hook: one flag byte per token
(has an output; selected by the policy). `Llama.generate` evaluates the prompt in its first
`eval` call and one sampled token per later call, which is how prompt and generated tokens are
told apart.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._abi import _core
from .errors import InterventionError, LingalignError, ModelFileError, ModelMismatchError, TransformFileError
from .model import ModelFingerprint, fingerprint, resolve_model
from .transform import POSITIONS, LayerMap, Transform, check_alpha

import llama_cpp
from llama_cpp import _internals as llama_internals

_ATTR = "_lingalign_steering"


@contextlib.contextmanager
def quiet_llama_log(verbose: bool) -> Iterator[None]:
    """Silence llama.cpp's log while lingalign creates a context for a non-verbose Llama.

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


# The MLP activation that feeds the down projection, as llama.cpp's graph names it (the
# "neurons" of language-expert clamps): gated GELU in the Gemma family, gated SiLU in llama-like
# models. Read from llama.cpp's build_ffn (LLM_FFN_PAR + GELU/SILU) for llama-cpp-python 0.3.36.
FFN_ACTIVATION = {
    "gemma": "ffn_geglu",
    "gemma2": "ffn_geglu",
    "gemma3": "ffn_geglu",
    "llama": "ffn_swiglu",
    "mistral3": "ffn_swiglu",
    "qwen2": "ffn_swiglu",
    "qwen3": "ffn_swiglu",
}


def ffn_activation(llm: llama_cpp.Llama) -> tuple[str, int] | None:
    """(tensor name prefix, n_ff) of the model's FFN activation, or None if lingalign does not
    know where this architecture's neurons are."""
    meta = llm.metadata
    arch = meta.get("general.architecture", "")
    name = FFN_ACTIVATION.get(arch)
    try:
        n_ff = int(meta.get(f"{arch}.feed_forward_length", "0"))
    except ValueError:  # per-layer widths (an array) are not supported
        return None
    if name is None or n_ff <= 0:
        return None
    return name, n_ff


def new_hook(llm: llama_cpp.Llama) -> Any:
    """A C++ hook sized for `llm`'s model, with llama.cpp's thread count and the FFN tensor known."""
    hook = _core.Hook(int(llama_cpp.llama_model_n_embd(llm.model)), int(llama_cpp.llama_model_n_layer(llm.model)))
    hook.threads = _kernel_threads(llm)
    ffn = ffn_activation(llm)
    if ffn is not None:
        hook.set_ffn(*ffn)
    return hook


def _set_hook_layer(hook: Any, layer: int, lm: LayerMap) -> None:
    """Hand one layer's transform to the C++ hook (which checks shapes and values again).

    float16 maps and low-rank factors are passed as they are: the hook stores them as float16
    and converts in its kernels (float32 accumulation); other dtypes are stored as float32.
    8-bit maps stay 8-bit (converted in the kernels too) and 4-bit maps 4-bit (integer dot products
    with the rows quantized to 8 bits per block of 32, see cpp/kernels_q4.h).
    """
    if lm.clamp_index is not None:
        try:
            hook.set_clamp(layer, lm.clamp_index, lm.clamp_value)
        except IndexError as e:  # a neuron past this model's FFN width
            raise TransformFileError(str(e)) from None
        except RuntimeError as e:  # no FFN tensor known for this architecture
            raise LingalignError(
                f"this transform clamps MLP neurons, which lingalign cannot do for this model's architecture "
                f"(supported: {', '.join(sorted(FFN_ACTIVATION))})"
            ) from e
    elif lm.matrix is not None:
        hook.set_affine(layer, lm.matrix, lm.bias)
    elif lm.delta_q8 is not None:
        hook.set_affine_q8(layer, lm.delta_q8, lm.delta_scale, lm.bias)
    elif lm.delta_q4 is not None:
        hook.set_affine_q4(layer, lm.delta_q4, lm.delta_scale, lm.bias)
    elif lm.lowrank_u is not None:
        hook.set_lowrank(layer, lm.lowrank_u, lm.lowrank_vt, lm.bias)
    else:
        hook.set_additive(layer, lm.vector)


def configure_hook(
    hook: Any,
    transform: Transform,
    model: ModelFingerprint,
    *,
    alpha: float | None = None,
    positions: str | None = None,
    layers: list[int] | None = None,
    force: bool = False,
) -> tuple[list[str], str]:
    """Check `transform` against `model` and load it into a C++ hook (all of it or `layers`).

    Everything is checked before the hook changes; alpha and positions default to the
    transform's. Returns (warnings, position policy). Used by Steering.set and by capture.
    """
    warnings = transform.model.check(model, force=force)
    transform.validate()
    use_layers = sorted(transform.layers) if layers is None else sorted(set(layers))
    unknown = [il for il in use_layers if il not in transform.layers]
    if unknown:
        raise LingalignError(f"layer(s) {unknown} not in the transform (it has {sorted(transform.layers)})")
    a = check_alpha(transform.alpha if alpha is None else alpha)
    p = transform.positions if positions is None else positions
    if p not in POSITIONS:
        raise LingalignError(f"unknown position policy {p!r} (one of {', '.join(POSITIONS)})")
    hook.clear_transforms()
    try:
        for il in use_layers:
            _set_hook_layer(hook, il, transform.layers[il])
    except Exception:
        hook.clear_transforms()
        raise
    hook.alpha = a
    return warnings, p


def _kernel_threads(llm: llama_cpp.Llama) -> int:
    """Threads for the map kernel: llama.cpp's batch threads, idle while the callback runs."""
    p = llm.context_params
    return max(1, min(512, int(p.n_threads_batch or p.n_threads or 1)))


def _hooked_params(base: llama_cpp.llama_context_params, hook: Any) -> tuple[Any, Any]:
    params = llama_cpp.llama_context_params()
    ctypes.pointer(params)[0] = base  # copy every field, then install the callback
    callback = llama_cpp.ggml_backend_sched_eval_callback(_core.CALLBACK_ADDRESS)
    params.cb_eval = callback
    params.cb_eval_user_data = ctypes.c_void_p(hook.address)
    return params, callback


# llama.cpp sizes a context's compute buffer for n_ubatch rows of n_vocab-wide logits (about
# 515 MiB at 512 for Gemma 3's 262k vocabulary): 256 halves it. A decode of up to n_batch tokens
# runs as several ubatches, which the hook follows.
BATCH_UBATCH_TOKENS = 256


def batch_context(
    llm: llama_cpp.Llama, hook: Any, *, n_batch: int, n_seq: int, embeddings: bool
) -> tuple[llama_internals.LlamaContext, Any]:
    """A context of its own on `llm`'s model, with `hook` as cb_eval, for whole-batch work
    (capture, choice scoring): n_batch tokens per decode, n_seq sequences in one unified KV
    stream (so llama.cpp keeps batch order), llm's thread counts. embeddings=True makes outputs
    n_embd wide (no n_vocab-wide logits buffer). Returns (context, callback object); keep the
    callback referenced until the context is closed."""
    base = llama_cpp.llama_context_default_params()
    base.n_ctx = n_batch
    base.n_batch = n_batch
    base.n_ubatch = min(n_batch, BATCH_UBATCH_TOKENS)
    base.n_seq_max = n_seq
    base.kv_unified = True
    base.n_threads = llm.context_params.n_threads
    base.n_threads_batch = llm.context_params.n_threads_batch
    base.embeddings = embeddings
    params, callback = _hooked_params(base, hook)
    with quiet_llama_log(llm.verbose):
        ctx = llama_internals.LlamaContext(model=llm._model, params=params, verbose=False)
    return ctx, callback


def decode_announced(
    hook: Any, ctx: llama_internals.LlamaContext, batch: Any, n_ubatch: int, flags: np.ndarray,
    slots: np.ndarray | None = None, *, task: str, doing: str,
) -> None:
    """llama_decode of `batch` (a llama_batch) in a batch_context, announced to the hook (one
    flag byte per token, and sequence slots while capturing). A hook error or a failed decode
    raises LingalignError: "<task> failed: ..." or "... while <doing>"."""
    hook.set_batch(n_ubatch, flags, slots)
    try:
        rc = llama_cpp.llama_decode(ctx.ctx, batch)
    finally:
        hook.end_batch()
    error = hook.take_error()
    if error:
        raise LingalignError(f"{task} failed: {error}")
    if rc != 0:
        raise LingalignError(f"llama_decode failed with code {rc} while {doing}")


class _PositionState:
    """Which tokens the policy selects, from what Llama.eval/generate are doing."""

    def __init__(self) -> None:
        self.positions = "all"
        self.in_generate = 0
        self.prompt_done = False
        self.eval_kind: str | None = None  # "prompt" | "generated" while inside Llama.eval
        self.eval_remaining = 0
        self.forced_kind: str | None = None  # set by Steering.tokens_are()

    def select(self, n: int) -> str:
        """Which of a batch's n tokens the policy moves: "all", "last" or "none"; counts the batch
        against the current Llama.eval."""
        kind = self.eval_kind or "prompt"
        final_chunk = True
        if self.eval_kind is not None:
            self.eval_remaining -= n
            final_chunk = self.eval_remaining <= 0
        policy = self.positions
        if policy == "all" or policy == kind:
            return "all"
        if policy == "last" and kind == "prompt" and final_chunk and n > 0:
            return "last"
        return "none"


# select()'s answer as the hook's set_batch_from_logits takes it
_APPLY = {"none": _core.APPLY_NONE, "all": _core.APPLY_ALL, "last": _core.APPLY_LAST}


class _HookedContext(llama_internals.LlamaContext):
    """A LlamaContext created with lingalign's cb_eval, announcing every batch to the hook."""

    def __init__(self, *, model: Any, params: Any, verbose: bool, hook: Any, state: _PositionState, callback: Any):
        self.hook = hook  # must outlive the native context: kept until close()
        self.state = state
        self._callback = callback  # the ctypes function pointer object stays referenced
        super().__init__(model=model, params=params, verbose=verbose)
        self.n_ubatch = int(llama_cpp.llama_n_ubatch(self.ctx))

    def decode(self, batch: llama_internals.LlamaBatch) -> None:
        n = int(batch.batch.n_tokens)
        selection = self.state.select(n)
        if not self.hook.wants_batch(selection != "none"):
            # Nothing to apply to these tokens and nothing to capture (an idle hook, or generated
            # tokens under positions="last"): not announcing the batch leaves llama.cpp's decode
            # as it is but for the callback's "not this tensor" answers.
            super().decode(batch)
            return
        # This runs for every generated token, right after llama.cpp streamed the model through
        # the caches: kept to a few Python operations (numpy here cost about 0.1 ms a token).
        logits_address = ctypes.cast(batch.batch.logits, ctypes.c_void_p).value or 0
        self.hook.set_batch_from_logits(self.n_ubatch, logits_address, n, _APPLY[selection])
        try:
            super().decode(batch)
        finally:
            visits = self.hook.end_batch()
        error = self.hook.take_error()
        if error:
            raise InterventionError(error)
        # selection is not "none" here, so some token had ROW_APPLY
        if visits == 0 and n > 0 and self.hook.alpha != 0.0 and self.hook.active_layers():
            raise InterventionError(
                "no l_out-<il> tensor was computed: this model's graph does not name its residual stream "
                "l_out (architecture not supported), so the transform was not applied"
            )

    def close(self) -> None:
        with quiet_llama_log(self.verbose):
            super().close()  # frees the native context: no callback can run after this
        self.hook = None


class Steering:
    """lingalign's hook installed on one `llama_cpp.Llama`.

    Change the transform, strength or position policy between calls with `set`, switch it off
    with `clear` (the hook then costs nothing), and restore a plain context with `detach`.
    Used as a context manager, it detaches on exit.
    """

    def __init__(self, llm: llama_cpp.Llama, model: ModelFingerprint) -> None:
        self._llm = llm
        self.model = model
        self._state = _PositionState()
        self._hook = new_hook(llm)
        self._transform: Transform | None = None
        self._router: Any = None
        self.routed_language: str | None = None
        self._orig_eval = llm.eval
        self._orig_generate = llm.generate
        self._install_context(hooked=True)
        llm.eval = self._eval  # type: ignore[method-assign]
        llm.generate = self._generate  # type: ignore[method-assign]
        setattr(llm, _ATTR, self)

    # -- public API -------------------------------------------------------------------------
    @property
    def transform(self) -> Transform | None:
        return self._transform

    @property
    def alpha(self) -> float:
        return float(self._hook.alpha)

    @property
    def positions(self) -> str:
        return self._state.positions

    @property
    def attached(self) -> bool:
        return getattr(self._llm, _ATTR, None) is self

    def set(
        self,
        transform: Transform | None,
        *,
        alpha: float | None = None,
        positions: str | None = None,
        layers: list[int] | None = None,
        force: bool = False,
    ) -> list[str]:
        """Apply `transform` from the next call on (None: no transform).

        alpha and positions default to the transform's own defaults; `layers` restricts it to a
        subset of its layers. The transform must fit this model (see ModelFingerprint.check;
        `force` applies one made for another vocabulary). Returns warnings, if any.
        """
        self._require_attached()
        if transform is None:
            self.clear()
            return []
        warnings, p = configure_hook(
            self._hook, transform, self.model, alpha=alpha, positions=positions, layers=layers, force=force
        )
        self._state.positions = p
        self._transform = transform
        self._invalidate_cache()
        return warnings

    def clear(self) -> None:
        """Remove the transform; the hook stays installed but idle (plain llama.cpp speed)."""
        self._require_attached()
        self._hook.clear_transforms()
        self._transform = None
        self._invalidate_cache()

    def detach(self) -> None:
        """Remove the hook: the Llama gets a plain context again and behaves as if never attached."""
        if not self.attached:
            return
        self.clear()
        self._install_context(hooked=False)
        for name in ("eval", "generate"):
            self._llm.__dict__.pop(name, None)
        delattr(self._llm, _ATTR)

    def set_router(self, router: Any) -> None:
        """Route each generation (`llm(prompt)`, completions, chat) to the transform for its
        prompt's language (a lingalign.route.Router), or stop routing with None. English, unknown
        or uncertain languages, and transforms that do not fit this model, get no transform."""
        self._require_attached()
        self._router = router
        if router is None:
            self.routed_language = None

    def _route(self, tokens: Any) -> None:
        try:
            text = self._llm.detokenize(list(tokens)).decode("utf-8", errors="replace")
            lang, transform = self._router.select(text)
        except Exception:  # fail safe: no transform
            lang, transform = None, None
        self.routed_language = lang
        if transform is self._transform:
            return
        if transform is None:
            self.clear()
            return
        try:
            self.set(transform)
        except LingalignError:
            self.clear()

    @contextlib.contextmanager
    def tokens_are(self, kind: str) -> Iterator[None]:
        """Treat tokens that `llm.eval` evaluates inside the block as `prompt` or `generated`.

        For scoring a continuation (a multiple-choice answer) after a context: evaluate the
        context as prompt and the continuation as generated, so that positions='last' moves the
        context's last token only, as it does when generating.
        """
        if kind not in ("prompt", "generated"):
            raise LingalignError(f"kind must be 'prompt' or 'generated', not {kind!r}")
        old, self._state.forced_kind = self._state.forced_kind, kind
        try:
            yield
        finally:
            self._state.forced_kind = old

    def take_rows_transformed(self) -> int:
        """Rows changed by the transforms since the last call (a diagnostic for tests)."""
        return int(self._hook.take_rows_transformed())

    def take_apply_seconds(self) -> float:
        """Seconds the hook spent applying transforms since the last call (clears it): the cost
        of the intervention itself, apart from llama.cpp's own work."""
        return float(self._hook.take_apply_seconds())

    def set_device_maps(self, on: bool) -> str:
        """For layers offloaded to a GPU (`n_gpu_layers`): apply the maps on the GPU, by a small
        ggml graph on the tensor's own device, instead of copying the rows to the host and back
        (the default). Returns the path's status ("ready", "active on <device>", or why it
        turned itself off, after which the round trip serves). Tensors in host memory and
        capture are unaffected. Tested on ggml's CPU backend only so far (tests/test_device_maps.py);
        on CUDA, tests/test_gpu.py has the checks, not yet run."""
        self._hook.set_device_maps(1 if on else 0)
        return str(self._hook.device_maps_status())

    def __enter__(self) -> Steering:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    # -- internals --------------------------------------------------------------------------
    def _require_attached(self) -> None:
        if not self.attached:
            raise LingalignError("this Steering was detached; call lingalign.attach(llm) again")

    def _invalidate_cache(self) -> None:
        # The KV cache holds states computed under the old settings: re-evaluate next time.
        self._llm.n_tokens = 0
        self._llm._requires_eval = True

    def _install_context(self, *, hooked: bool) -> None:
        llm = self._llm
        old = llm._ctx
        with quiet_llama_log(llm.verbose):
            if hooked:
                params, callback = _hooked_params(llm.context_params, self._hook)
                ctx: llama_internals.LlamaContext = _HookedContext(
                    model=llm._model, params=params, verbose=llm.verbose, hook=self._hook, state=self._state,
                    callback=callback,
                )
            else:
                ctx = llama_internals.LlamaContext(model=llm._model, params=llm.context_params, verbose=llm.verbose)
        if getattr(llm, "_lora_adapter", None) is not None:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(llm._lora_adapter)
            scales = (ctypes.c_float * 1)(llm.lora_scale)
            if llama_cpp.llama_set_adapters_lora(ctx.ctx, adapters, 1, scales):
                ctx.close()
                raise LingalignError("could not re-apply the Llama's LoRA adapter to the new context")
        llm._ctx = ctx
        llm._stack.enter_context(contextlib.closing(ctx))
        with quiet_llama_log(llm.verbose):
            old.close()
        self._invalidate_cache()

    def _eval(self, tokens: Any) -> None:
        state = self._state
        if state.forced_kind is not None:
            state.eval_kind = state.forced_kind
        else:
            state.eval_kind = "generated" if (state.in_generate and state.prompt_done) else "prompt"
        state.eval_remaining = len(tokens)
        try:
            self._orig_eval(tokens)
        finally:
            state.eval_kind = None
            if state.in_generate:
                state.prompt_done = True

    def _generate(self, tokens: Any, *args: Any, **kwargs: Any) -> Iterator[int]:
        if self._router is not None:
            self._route(tokens)
        state = self._state
        if state.positions != "all":
            # Cached prefixes were computed with other tokens selected: evaluate everything.
            self._invalidate_cache()
        state.in_generate += 1
        outer_prompt_done = state.prompt_done
        state.prompt_done = False
        try:
            return (yield from self._orig_generate(tokens, *args, **kwargs))
        finally:
            state.in_generate -= 1
            state.prompt_done = outer_prompt_done


def attach(
    llm: llama_cpp.Llama,
    transform: Transform | None = None,
    *,
    alpha: float | None = None,
    positions: str | None = None,
    force: bool = False,
) -> Steering:
    """Install lingalign's hook on `llm` (once) and optionally set a transform; returns the Steering.

    The Llama keeps its model; its context is recreated with the callback, so its KV cache
    starts empty. Calling attach again returns the same Steering.
    """
    steering = getattr(llm, _ATTR, None)
    if steering is None:
        model_path = getattr(llm, "model_path", None)
        if not model_path or not os.path.isfile(model_path):
            raise LingalignError("cannot fingerprint this Llama: its model_path is not a readable file")
        model = fingerprint(model_path)
        n_embd = int(llama_cpp.llama_model_n_embd(llm.model))
        n_layer = int(llama_cpp.llama_model_n_layer(llm.model))
        if (n_embd, n_layer) != (model.n_embd, model.n_layer):
            raise ModelMismatchError(
                f"{model_path}: header says n_embd={model.n_embd}, n_layer={model.n_layer}; "
                f"llama.cpp loaded n_embd={n_embd}, n_layer={n_layer}"
            )
        steering = Steering(llm, model)
    if transform is not None:
        steering.set(transform, alpha=alpha, positions=positions, force=force)
    return steering


def steering_of(llm: llama_cpp.Llama) -> Steering | None:
    """The Steering attached to `llm`, or None."""
    return getattr(llm, _ATTR, None)


def open_model(model_path: str | os.PathLike[str] | None = None, **llama_kwargs: Any) -> llama_cpp.Llama:
    """A plain `llama_cpp.Llama` for `model_path` (default model if None), with clear errors.

    The GGUF header is checked first, so a wrong file gets a message naming the problem rather
    than llama.cpp's generic failure.
    """
    path = resolve_model(model_path)
    fingerprint(path)  # raises ModelFileError for a file that is not a GGUF language model
    llama_kwargs.setdefault("verbose", False)
    try:
        with quiet_llama_log(bool(llama_kwargs["verbose"])):
            return llama_cpp.Llama(model_path=str(path), **llama_kwargs)
    except ValueError as e:
        raise ModelFileError(f"{path}: llama.cpp could not load this model ({e})") from None


def load(
    model_path: str | os.PathLike[str] | None = None,
    transform: Transform | str | os.PathLike[str] | None = None,
    *,
    alpha: float | None = None,
    positions: str | None = None,
    force: bool = False,
    **llama_kwargs: Any,
) -> llama_cpp.Llama:
    """Load a GGUF model (default: Gemma 3 270M) as a `llama_cpp.Llama` with the hook attached.

    `transform` may be a Transform or a path to a transform file. Extra keyword arguments go to
    `llama_cpp.Llama` (n_ctx, n_threads, ...). The Steering is `lingalign.steering_of(llm)`.
    """
    llm = open_model(model_path, **llama_kwargs)
    if transform is not None and not isinstance(transform, Transform):
        transform = Transform.load(transform)
    attach(llm, transform, alpha=alpha, positions=positions, force=force)
    return llm
