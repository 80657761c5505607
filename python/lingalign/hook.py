"""Attach the C++ hook to a llama_cpp.Llama and control the intervention between calls.

`attach(llm)` gives `llm` a fresh llama.cpp context whose cb_eval is lingalign's C++ callback
(cb_eval can only be set when a context is created; the model weights are shared, not reloaded).
`llm(prompt)`, `create_completion` and `create_chat_completion` then run unchanged with the
transform on. While no transform is selected the hook asks llama.cpp for no tensor, so the graph
is not split and speed is that of plain llama.cpp.

Position policies need to know which token each row is. Every llama_decode of the Llama goes
through `_Announcer.decode`, which announces the batch to the hook: one flag byte per token
(has an output; selected by the policy; generated, for a transform's generated-only layers).
`Llama.generate` evaluates the prompt in its first `eval` call and one sampled token per later
call, which is how prompt and generated tokens are told apart.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import _llama, sites
from ._abi import _core
from .errors import InterventionError, LingalignError, ModelFileError, ModelMismatchError
from .model import ModelFingerprint, fingerprint
from .models import resolve_model
from .prepared import Prepared, prepare
from .transform import Transform

_ATTR = "_lingalign_steering"


def new_hook(llm: Any) -> Any:
    """A C++ hook sized for `llm`'s model, with llama.cpp's thread count and the FFN site known."""
    hook = _core.Hook(_llama.n_embd(llm), _llama.n_layer(llm))
    hook.threads = _llama.kernel_threads(llm)
    ffn = sites.ffn_site(llm.metadata)
    if ffn is not None:
        hook.set_ffn(ffn.tensor, ffn.width)
    return hook


def hook_with(llm: Any, transform: Transform | None, *, model: ModelFingerprint | None = None,
              alpha: float | None = None, positions: str | None = None, force: bool = False) -> tuple[Any, Prepared | None]:
    """A new hook for `llm` (see new_hook) with `transform` prepared and selected, for the batch
    work that runs in contexts of its own (capture, choice scoring): (hook, Prepared or None).
    `model` is llm's fingerprint, read from its file when not given."""
    hook = new_hook(llm)
    if transform is None:
        return hook, None
    model = fingerprint(llm.model_path) if model is None else model
    prepared = prepare(hook, transform, model, alpha=alpha, positions=positions, force=force)
    hook.select(prepared.core, prepared.alpha)
    return hook, prepared


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


class _Announcer:
    """Announces each decode of a hooked context to the hook, and checks the hook afterwards."""

    def __init__(self, hook: Any, state: _PositionState) -> None:
        self.hook = hook
        self.state = state

    def decode(self, batch: Any, run: Callable[[], None], n_ubatch: int) -> None:
        n = int(batch.n_tokens)
        selection = self.state.select(n)
        generated = self.state.eval_kind == "generated"
        if not self.hook.wants_batch(selection != "none", generated):
            # Nothing to apply to these tokens and nothing to capture (an idle hook, generated
            # tokens under positions="last", a prompt and only generated-only layers): not
            # announcing the batch leaves llama.cpp's decode as it is but for the callback's
            # "not this tensor" answers.
            run()
            return
        # This runs for every generated token, right after llama.cpp streamed the model through
        # the caches: kept to a few Python operations (numpy here cost about 0.1 ms a token).
        self.hook.set_batch_from_logits(n_ubatch, _llama.batch_logits_address(batch), n, _APPLY[selection],
                                        generated)
        try:
            run()
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


class Steering:
    """lingalign's hook installed on one `llama_cpp.Llama`.

    Change the transform, strength or position policy between calls with `set` (or `prepare`
    once and `use` per call: an O(1) switch), switch it off with `clear` (the hook then costs
    nothing), and restore a plain context with `detach`. Used as a context manager, it detaches
    on exit. `lingalign.attach(llm)` returns a Llama's Steering.
    """

    def __init__(self, llm: Any, model: ModelFingerprint) -> None:
        self._llm = llm
        self.model = model
        self._state = _PositionState()
        self._hook = new_hook(llm)
        self._active: Prepared | None = None
        self._router: Any = None
        self.routed_language: str | None = None
        self._stats: dict[str, Any] = {"rows_transformed": 0, "apply_seconds": 0.0}
        self._tensors = {"host": 0, "round_trip": 0, "device": 0}
        self._install_context(hooked=True)
        self._orig_eval, self._orig_generate = _llama.wrap_generation(llm, self._eval, self._generate)
        setattr(llm, _ATTR, self)

    # -- public API -------------------------------------------------------------------------
    @property
    def transform(self) -> Transform | None:
        """The transform in use, or None."""
        return self._active.transform if self._active is not None else None

    @property
    def active(self) -> Prepared | None:
        """The prepared transform in use (with its alpha and positions), or None."""
        return self._active

    @property
    def alpha(self) -> float:
        return float(self._hook.alpha)

    @property
    def positions(self) -> str:
        return self._state.positions

    @property
    def attached(self) -> bool:
        return getattr(self._llm, _ATTR, None) is self

    def prepare(
        self,
        transform: Transform,
        *,
        alpha: float | None = None,
        positions: str | None = None,
        layers: Sequence[int] | None = None,
        force: bool = False,
    ) -> Prepared:
        """Check `transform` against this model and pack it for `use`; changes nothing here.

        alpha and positions default to the transform's own; `layers` restricts it to a subset of
        its layers; `force` applies one made for another vocabulary (see ModelFingerprint.check).
        """
        return prepare(self._hook, transform, self.model, alpha=alpha, positions=positions, layers=layers,
                       force=force)

    def use(self, prepared: Prepared | None) -> None:
        """Switch to a prepared transform (None: none) from the next call on, in O(1). The KV
        cache is invalidated when the switch changes what the model computes."""
        self._require_attached()
        if prepared is not None and prepared.core.n_embd != self._hook.n_embd:
            raise LingalignError("this transform was prepared for another model")
        if prepared is self._active:
            return
        if prepared is None:
            self._hook.select(None, 1.0)
        else:
            self._hook.select(prepared.core, prepared.alpha)
            self._state.positions = prepared.positions
        self._active = prepared
        _llama.invalidate_cache(self._llm)

    def set(
        self,
        transform: Transform | None,
        *,
        alpha: float | None = None,
        positions: str | None = None,
        layers: Sequence[int] | None = None,
        force: bool = False,
    ) -> list[str]:
        """Apply `transform` from the next call on (None: no transform); returns warnings, if any.

        All or nothing: if the transform cannot be applied, this raises and the previous
        transform stays in use. See `prepare` for the arguments.
        """
        self._require_attached()
        if transform is None:
            self.clear()
            return []
        prepared = self.prepare(transform, alpha=alpha, positions=positions, layers=layers, force=force)
        self.use(prepared)
        return list(prepared.warnings)

    def clear(self) -> None:
        """Remove the transform; the hook stays installed but idle (plain llama.cpp speed)."""
        self._require_attached()
        self._hook.select(None, 1.0)
        self._active = None
        _llama.invalidate_cache(self._llm)

    def detach(self) -> None:
        """Remove the hook: the Llama gets a plain context again and behaves as if never attached."""
        if not self.attached:
            return
        self.clear()
        self._install_context(hooked=False)
        _llama.unwrap_generation(self._llm)
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
        if transform is self.transform:
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

    def stats(self, *, reset: bool = False) -> dict[str, Any]:
        """What the hook did since the last reset: `rows_transformed`, `apply_seconds` (the time
        spent applying transforms: the cost of the intervention itself, apart from llama.cpp's
        own work), and `tensors`, the tensors it served by how their data was reached (`host`
        memory, a `round_trip` from device memory and back, or on the `device`); and what it
        holds now: `active_layers`, `map_bytes` per layer, `device_maps` (the GPU path's
        status), `kernel_threads`. reset=True starts the counts again after reading them."""
        self._count()
        out: dict[str, Any] = {**self._stats, "tensors": dict(self._tensors)}
        out["active_layers"] = list(self._hook.active_layers())
        core = self._active.core if self._active is not None else None
        out["map_bytes"] = {il: int(core.map_bytes(il)) for il in core.layers()} if core is not None else {}
        out["device_maps"] = str(self._hook.device_maps_status())
        out["kernel_threads"] = int(self._hook.threads)
        if reset:
            self._stats = {"rows_transformed": 0, "apply_seconds": 0.0}
            self._tensors = dict.fromkeys(self._tensors, 0)
        return out

    def _count(self) -> None:
        self._stats["rows_transformed"] += int(self._hook.take_rows_transformed())
        self._stats["apply_seconds"] += float(self._hook.take_apply_seconds())
        for key, value in self._hook.take_tensor_paths().items():
            self._tensors[key] = self._tensors.get(key, 0) + int(value)

    def take_rows_transformed(self) -> int:
        """Rows changed by the transforms since the last call (clears that count only)."""
        self._count()
        rows = int(self._stats["rows_transformed"])
        self._stats["rows_transformed"] = 0
        return rows

    def take_apply_seconds(self) -> float:
        """Seconds the hook spent applying transforms since the last call (clears that count only)."""
        self._count()
        seconds = float(self._stats["apply_seconds"])
        self._stats["apply_seconds"] = 0.0
        return seconds

    def set_device_maps(self, on: bool) -> str:
        """For layers offloaded to a GPU (`n_gpu_layers`): apply the maps on the GPU, by a small
        ggml graph on the tensor's own device, instead of copying the rows to the host and back
        (the default). Returns the path's status ("ready", "active on <device>", or why it
        turned itself off, after which the round trip serves). Tensors in host memory and
        capture are unaffected."""
        self._hook.set_device_maps(1 if on else 0)
        return str(self._hook.device_maps_status())

    def reinstall(self) -> None:
        """Give the Llama a new hooked context (the same hook and transform; the KV cache starts
        empty). Benchmarks use it to place contexts anew between rounds."""
        self._require_attached()
        self._install_context(hooked=True)

    def __enter__(self) -> Steering:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    # -- internals --------------------------------------------------------------------------
    def _require_attached(self) -> None:
        if not self.attached:
            raise LingalignError("this Steering was detached; call lingalign.attach(llm) again")

    def _install_context(self, *, hooked: bool) -> None:
        llm = self._llm
        if hooked:
            ctx = _llama.hooked_context(llm, _core.CALLBACK_ADDRESS, self._hook.address,
                                        _Announcer(self._hook, self._state))
        else:
            ctx = _llama.plain_context(llm)
        _llama.replace_context(llm, ctx)

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
        if state.positions != "all" or (self._active is not None and self._active.transform.generated_layers):
            # Cached prefixes were computed with other tokens selected (or counted as generated
            # for generated-only layers): evaluate everything.
            _llama.invalidate_cache(self._llm)
        state.in_generate += 1
        outer_prompt_done = state.prompt_done
        state.prompt_done = False
        try:
            return (yield from self._orig_generate(tokens, *args, **kwargs))
        finally:
            state.in_generate -= 1
            state.prompt_done = outer_prompt_done


def attach(
    llm: Any,
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
        n_embd, n_layer = _llama.n_embd(llm), _llama.n_layer(llm)
        if (n_embd, n_layer) != (model.n_embd, model.n_layer):
            raise ModelMismatchError(
                f"{model_path}: header says n_embd={model.n_embd}, n_layer={model.n_layer}; "
                f"llama.cpp loaded n_embd={n_embd}, n_layer={n_layer}"
            )
        steering = Steering(llm, model)
    if transform is not None:
        steering.set(transform, alpha=alpha, positions=positions, force=force)
    return steering


def steering_of(llm: Any) -> Steering | None:
    """The Steering attached to `llm`, or None (deprecated: `attach(llm)` returns it)."""
    return getattr(llm, _ATTR, None)


def open_model(model_path: str | os.PathLike[str] | None = None, **llama_kwargs: Any) -> Any:
    """A plain `llama_cpp.Llama` for `model_path` (default model if None), with clear errors.

    The GGUF header is checked first, so a wrong file gets a message naming the problem rather
    than llama.cpp's generic failure.
    """
    path = resolve_model(model_path)
    fingerprint(path)  # raises ModelFileError for a file that is not a GGUF language model
    llama_kwargs.setdefault("verbose", False)
    import llama_cpp

    try:
        with _llama.quiet_llama_log(bool(llama_kwargs["verbose"])):
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
) -> Any:
    """Load a GGUF model (default: Gemma 3 270M) as a `llama_cpp.Llama` with the hook attached.

    `transform` may be a Transform or a path to a transform file. Extra keyword arguments go to
    `llama_cpp.Llama` (n_ctx, n_threads, ...). The Steering is `lingalign.steering_of(llm)`.
    """
    llm = open_model(model_path, **llama_kwargs)
    if transform is not None and not isinstance(transform, Transform):
        transform = Transform.load(transform)
    attach(llm, transform, alpha=alpha, positions=positions, force=force)
    return llm
