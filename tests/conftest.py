from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tinymodel import write_tiny_llama  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(params=["auto", "portable"])
def conversion(request):
    """Run the test with the kernels' default conversion of float16 and int8 maps (F16C and AVX2
    where the CPU has them) and with the portable code other CPUs use."""
    from lingalign import _core

    _core.testing.set_portable_kernels(request.param == "portable")
    try:
        yield request.param
    finally:
        _core.testing.set_portable_kernels(False)


SRC = ["hola amigo", "buenos dias", "la casa es azul", "me gusta el cafe", "donde esta el tren", "tengo hambre"]
TGT = ["hello friend", "good morning", "the house is blue", "i like coffee", "where is the train", "i am hungry"]


@pytest.fixture
def texts(tmp_path: Path) -> tuple[Path, Path]:
    """Six Spanish sentences and their English, as two line-aligned files."""
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("\n".join(SRC) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(TGT) + "\n", encoding="utf-8")
    return src, tgt


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same shapes, other weights and seed: a different model of the same family."""
    return write_tiny_llama(tmp_path_factory.mktemp("models2") / "tiny2.gguf", seed=1)


def tiny_llm(path: Path, **kwargs):
    import llama_cpp

    kwargs.setdefault("n_ctx", 128)
    kwargs.setdefault("n_threads", 1)
    kwargs.setdefault("n_threads_batch", kwargs["n_threads"])
    kwargs.setdefault("verbose", False)
    return llama_cpp.Llama(model_path=str(path), **kwargs)


def configure_new_hooks(monkeypatch: pytest.MonkeyPatch, configure: Callable[[Any], None]) -> list:
    """Every hook that capture and choice scoring make from now on (their own contexts' hooks,
    not a Steering's) is passed to `configure` first; returns the list they are added to."""
    from lingalign.hook import hook_with as original

    hooks: list = []

    def configured_hook_with(llm: Any, *args: Any, **kwargs: Any) -> Any:
        hook, prepared = original(llm, *args, **kwargs)
        hooks.append(hook)
        configure(hook)
        return hook, prepared

    for module in ("lingalign.capturing", "lingalign.evaluate"):  # each imported the name itself
        monkeypatch.setattr(importlib.import_module(module), "hook_with", configured_hook_with)
    return hooks


def capture_array(llm: Any, sentences: Any, **kwargs: Any) -> Any:
    """lingalign.capture's activations array (tests compare arrays)."""
    from lingalign.capturing import capture

    return capture(llm, sentences, **kwargs).activations


def hook_of(steering: Any) -> Any:
    """The C++ hook of a Steering, for the test-only switches it has (device maps on host
    tensors, the host round trip); diagnostics go through Steering.stats()."""
    return steering._hook
