"""The HTTP side of `lingalign serve`: llama-cpp-python's own server (llama_cpp.server of 0.3.36:
its FastAPI app factory, settings, API-key check, model lock, error handling, /v1/models and the
extras) with its two generation routes replaced by ones that steer each request, and
GET /v1/lingalign/transforms added. The only module that imports llama_cpp.server.

Why a request's transform is the one it runs with, whatever else arrives:
- llama-cpp-python runs one generation at a time on the model: a route holds its model lock
  (`get_llama_proxy`) from before the Llama is called until the generation, a stream included,
  has ended.
- A request's transform is decided from its body alone before it waits for that lock, and put
  on the hook (Steering.use) by the request itself after it holds the lock, in the worker thread
  that then runs the generation. Only the next holder of the lock selects another.
- A stream that ends early (the client went away, or --interrupt-requests) is closed in a worker
  thread while the lock is still held, so the generation's own clean-up (llama-cpp-python's and
  the Steering's) has run before the next request starts: llama-cpp-python's publisher leaves
  the abandoned generator to the garbage collector, which may finalize it at any time, on any
  thread, also during the next request's generation. That is why the stream publisher here is
  lingalign's own, modeled on llama-cpp-python's.
- Steering.use invalidates llama-cpp-python's cached prompt when the selected Prepared changes,
  so KV prefixes are reused only between requests with the same transform and settings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import anyio
import llama_cpp
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse
from llama_cpp.server import app as upstream
from llama_cpp.server.errors import RouteErrorHandler
from llama_cpp.server.settings import ModelSettings, ServerSettings
from llama_cpp.server.types import CreateChatCompletionRequest, CreateCompletionRequest
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from .._llama import quiet_llama_log
from ..errors import LingalignError, RequestError
from ..hook import Steering, attach
from ..model import fingerprint
from ..models import resolve_model
from ..route import detect_language
from .catalog import Catalog, read_transforms
from .config import ServeConfig
from .lexicons import Lexicons
from .selection import AUTO, FIELD, NONE, Selection, chat_text, completion_text, parse, select, with_lexicon

_log = logging.getLogger("lingalign.serve")

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
CODEX = "/v1/engines/copilot-codex/completions"  # llama-cpp-python's alias of completions
TRANSFORMS = "/v1/lingalign/transforms"
REPLACED = (COMPLETIONS, CHAT, CODEX)
# Request fields llama-cpp-python's routes do not pass to the Llama (server/app.py of 0.3.36).
COMPLETION_EXCLUDE = {"n", "best_of", "logit_bias_type", "user", "min_tokens"}
CHAT_EXCLUDE = {"n", "logit_bias_type", "user", "min_tokens"}
STREAM_BUFFER = 10  # chunks between the generation and the socket, as llama-cpp-python has it


class Steered:
    """The served Llama with its Steering, the transforms it serves and the default."""

    def __init__(self, llm: Any, steering: Steering, catalog: Catalog, default: str | None,
                 interrupt_requests: bool, lexicons: Lexicons | None = None) -> None:
        self.llm = llm
        self.steering = steering
        self.catalog = catalog
        self.default = default
        self.interrupt_requests = interrupt_requests
        self.lexicons = lexicons if lexicons is not None else Lexicons()

    def select(self, body: Any, text: str | None) -> Selection:
        """What the request body asks for (RequestError if malformed): no model access."""
        return select(parse(body, self.default), self.catalog, text, self.lexicons)

    def start(self, llama: Any, selection: Selection, call: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """Select the request's transform and call the Llama: in a worker thread, holding the
        model lock. A stream's generation runs later, as its chunks are taken, still under it."""
        if llama is not self.llm:
            raise LingalignError("llama-cpp-python's server replaced the steered model; lingalign serve serves one model")
        self.steering.use(selection.prepared)
        return call(llama, **kwargs)

    def listing(self) -> dict[str, Any]:
        return {"object": "list", "default": self.default or NONE, "data": self.catalog.describe()}


def _bad_request(e: RequestError) -> JSONResponse:
    """HTTP 400 in the OpenAI error shape, which the openai client reports."""
    return JSONResponse({"error": {"message": str(e), "type": "invalid_request_error", "param": FIELD, "code": None}},
                        status_code=status.HTTP_400_BAD_REQUEST)


def _close(chunks: Any) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def _next(chunks: Iterator[Any]) -> Any:
    return next(chunks, None)


async def _publish(request: Request, send_chan: Any, body: Any, body_model: str | None, call: Callable[..., Any],
                   kwargs: dict[str, Any], selection: Selection, steered: Steered) -> None:
    """A stream's producer: llama-cpp-python's get_event_publisher, plus the `lingalign` object
    in every chunk, errors as an OpenAI error event, and the generator closed under the lock."""
    report = selection.report()
    async with contextlib.asynccontextmanager(upstream.get_llama_proxy)() as proxy, send_chan:
        chunks = None
        try:
            llama = upstream.prepare_request_resources(body, proxy, body_model, kwargs)
            chunks = await run_in_threadpool(steered.start, llama, selection, call, kwargs)
            while True:
                chunk = await anyio.to_thread.run_sync(_next, chunks)
                if chunk is None:
                    break
                chunk[FIELD] = report
                await send_chan.send({"data": json.dumps(chunk)})
                if await request.is_disconnected():
                    return
                if steered.interrupt_requests and upstream.llama_outer_lock.locked():
                    break  # another request waits for the model (llama-cpp-python's interrupt_requests)
            await send_chan.send({"data": "[DONE]"})
        except Exception as e:  # the response has begun: end it with an error event, as OpenAI does
            _log.exception("stream failed")
            message = {"message": str(e), "type": "server_error", "param": None, "code": None}
            with contextlib.suppress(Exception):
                await send_chan.send({"data": json.dumps({"error": message})})
        finally:
            if chunks is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_close, chunks)


async def _generate(request: Request, body: Any, body_model: str | None, call: Callable[..., Any],
                    kwargs: dict[str, Any], selection: Selection, steered: Steered) -> Any:
    """Run one generation request the way llama-cpp-python's routes do, steered."""
    headers = selection.headers()
    if kwargs.get("stream", False):
        send_chan, recv_chan = anyio.create_memory_object_stream(STREAM_BUFFER)
        return EventSourceResponse(
            recv_chan,
            data_sender_callable=partial(_publish, request, send_chan, body, body_model, call, kwargs, selection,
                                         steered),
            sep="\n", ping_message_factory=upstream._ping_message_factory, headers=headers)
    async with contextlib.asynccontextmanager(upstream.get_llama_proxy)() as proxy:
        llama = upstream.prepare_request_resources(body, proxy, body_model, kwargs)
        if await request.is_disconnected():
            raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail="Client closed request")
        result = await run_in_threadpool(steered.start, llama, selection, call, kwargs)
    return JSONResponse({**result, FIELD: selection.report()}, headers=headers)


def _router(steered: Steered) -> APIRouter:
    router = APIRouter(route_class=RouteErrorHandler)
    auth = [Depends(upstream.authenticate)]

    async def create_completion(request: Request, body: CreateCompletionRequest) -> Any:
        raw = await request.json()
        try:
            if isinstance(body.prompt, list) and len(body.prompt) > 1:
                raise RequestError("one prompt per request: llama-cpp-python's server takes a single prompt")
            selection = steered.select(raw, completion_text(raw))
        except RequestError as e:
            return _bad_request(e)
        if isinstance(body.prompt, list):
            body.prompt = body.prompt[0] if body.prompt else ""
        body_model = "copilot-codex" if request.url.path == CODEX else body.model
        kwargs = with_lexicon(body.model_dump(exclude=COMPLETION_EXCLUDE), selection.lexicon, chat=False)
        return await _generate(request, body, body_model, llama_cpp.Llama.__call__, kwargs, selection, steered)

    async def create_chat_completion(request: Request, body: CreateChatCompletionRequest) -> Any:
        raw = await request.json()
        try:
            selection = steered.select(raw, chat_text(raw))
        except RequestError as e:
            return _bad_request(e)
        kwargs = with_lexicon(body.model_dump(exclude=CHAT_EXCLUDE), selection.lexicon, chat=True)
        return await _generate(request, body, body.model, llama_cpp.Llama.create_chat_completion, kwargs, selection,
                               steered)

    async def list_transforms() -> dict[str, Any]:
        return steered.listing()

    router.add_api_route(COMPLETIONS, create_completion, methods=["POST"], dependencies=auth, summary="Completion",
                         tags=["OpenAI V1"])
    router.add_api_route(CODEX, create_completion, methods=["POST"], dependencies=auth, include_in_schema=False)
    router.add_api_route(CHAT, create_chat_completion, methods=["POST"], dependencies=auth, summary="Chat",
                         tags=["OpenAI V1"])
    router.add_api_route(TRANSFORMS, list_transforms, methods=["GET"], dependencies=auth,
                         summary="The transforms this server applies", tags=["lingalign"])
    return router


def _check_default(default: str | None, names: list[str]) -> str | None:
    if default in (None, NONE):
        return None
    if default == AUTO or default in names:
        return default
    raise LingalignError(f"--default {default!r}: not auto, none or a served transform ({', '.join(names) or 'none served'})")


def create_app(config: ServeConfig) -> FastAPI:
    """llama-cpp-python's app for config's model, steered: transforms read and checked against
    the model file first, then the model loaded, the hook attached and every transform packed."""
    if os.environ.get("CONFIG_FILE"):
        # llama_cpp.server's factory would take every setting from that file instead
        raise LingalignError("CONFIG_FILE is set: lingalign serve takes its settings from its options; unset it")
    model_path = resolve_model(config.model)
    files = read_transforms(config.dirs(), fingerprint(model_path), force=config.force)
    default = _check_default(config.default, [f.name for f in files])
    lexicons = config.lexicons()
    server_settings = ServerSettings(host=config.host, port=config.port, api_key=config.api_key,
                                     interrupt_requests=config.interrupt_requests)
    model_settings = ModelSettings(**config.model_settings(model_path))
    # Take llama-cpp-python's generation routes off its module-level router before its factory
    # includes it (recent FastAPI versions keep an included router by reference, older ones copy
    # its routes: removing them at the source works with both); lingalign's replace them.
    upstream.router.routes[:] = [r for r in upstream.router.routes if getattr(r, "path", None) not in REPLACED]
    with quiet_llama_log(config.verbose):
        app = upstream.create_app(server_settings=server_settings, model_settings=[model_settings])
    detect_language("warm up")  # loads the detector's model (about a second) now, not in the first auto request
    llm = upstream._llama_proxy()  # the model the factory loaded (its only one)
    steering = attach(llm)
    steered = Steered(llm, steering, Catalog.prepare(files, steering, force=config.force), default,
                      config.interrupt_requests, lexicons)
    for f in files:
        for w in f.warnings:
            print(f"lingalign serve: warning: {f.name}: {w}", file=sys.stderr)
    app.include_router(_router(steered))
    app.state.lingalign = steered
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), before the server starts, so that
    the address printed is the one served."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def run(config: ServeConfig) -> None:
    """Serve `config` with uvicorn until interrupted (SIGINT, SIGTERM)."""
    app = create_app(config)
    sock = bind(config.host, config.port)
    host = f"[{config.host}]" if ":" in config.host else config.host
    steered: Steered = app.state.lingalign
    names = ", ".join(steered.catalog.names) or "none"
    print(f"lingalign serve: transforms: {names}; default: {steered.default or NONE}; {steered.lexicons.describe()}",
          file=sys.stderr)
    print(f"lingalign serve: listening on http://{host}:{sock.getsockname()[1]}/v1", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app)).run(sockets=[sock])
