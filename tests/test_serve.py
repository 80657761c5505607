"""lingalign serve over HTTP with the real openai client.

Servers run as `lingalign serve` processes on 127.0.0.1 (a free port), on the tiny random model
with one thread. Every generated text is compared with the same request run in this process on
a Llama made from the same settings: with a transform, steered by Steering.set; without one, a
plain llama-cpp-python Llama. Needs the server extra and openai (the test extra); skipped
without them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from test_hook import _transform

for _module in ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
    pytest.importorskip(_module, reason='needs the server extra: pip install ".[server]"')
openai = pytest.importorskip("openai", reason='needs openai: pip install ".[test]"')

import llama_cpp  # noqa: E402
from llama_cpp.server.model import LlamaProxy  # noqa: E402
from llama_cpp.server.settings import ModelSettings  # noqa: E402
from llama_cpp.server.types import CreateChatCompletionRequest, CreateCompletionRequest  # noqa: E402

import lingalign  # noqa: E402
from lingalign.cli import main  # noqa: E402
from lingalign.data import EMBEDDED_LANGUAGES, embedded_path, read_lines, shipped_dir  # noqa: E402
from lingalign.model import ModelFingerprint  # noqa: E402
from lingalign.serve import ServeConfig  # noqa: E402
from lingalign.serve.app import CHAT_EXCLUDE, COMPLETION_EXCLUDE  # noqa: E402

CTX, THREADS, MAX_TOKENS = 512, 1, 8
LANGS = [lang for lang in EMBEDDED_LANGUAGES if lang != "eng"]
PROMPT = "the quick brown fox jumps over"
MESSAGES = [{"role": "user", "content": "the dog sat on the mat"}]
# Where a stream must run long: no </s> (id 2) and no byte tokens (3-258). llama-cpp-python 0.3.36
# skips its max_tokens check after a byte that starts a UTF-8 sequence, so the tiny model's
# random bytes can run a generation on until the context is full.
LONG = {str(i): -100.0 for i in range(2, 259)}


class Server:
    """A `lingalign serve` process on 127.0.0.1, its log in files."""

    def __init__(self, tmp: Path, model: Path | None, *args: str, threads: int = THREADS, ctx: int = CTX) -> None:
        self.err = tmp / "server.err"
        package_root = str(Path(lingalign.__file__).resolve().parent.parent)  # the lingalign under test
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
        cmd = [sys.executable, "-m", "lingalign.cli", "serve", "--host", "127.0.0.1", "--port", "0",
               "--threads", str(threads), "--ctx", str(ctx), *(["--model", str(model)] if model else []), *args]
        with open(tmp / "server.out", "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 180
        while not (m := re.search(r"listening on (http://127\.0\.0\.1:(\d+)/v1)", self.log())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the server did not start:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        self.url, self.port = m.group(1), int(m.group(2))
        self.main = self.client()  # for the test's own thread

    def ask(self, kind: str, body: dict[str, Any]) -> tuple[str, dict[str, Any], Any]:
        return ask(self.main, kind, body)

    def log(self) -> str:
        return self.err.read_text(errors="replace")

    def client(self, api_key: str = "unused") -> Any:
        # trust_env=False: no proxy from the environment between the client and 127.0.0.1
        return openai.OpenAI(base_url=self.url, api_key=api_key, max_retries=0, timeout=120,
                             http_client=openai.DefaultHttpxClient(trust_env=False))

    def raw(self, method: str, path: str, body: str | None = None, key: str | None = None) -> tuple[int, Any, Any]:
        """(status, headers, JSON) of a request sent as it is (NaN literals included)."""
        headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {key}"} if key else {})
        req = urllib.request.Request(self.url + path, data=body.encode() if body is not None else None,
                                     headers=headers, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=120) as r:
                return r.status, r.headers, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, e.headers, json.loads(e.read())

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))

    def stop(self) -> None:
        if hasattr(self, "main"):
            self.main.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


def _collect(kind: str, out: Any, stream: bool) -> str:
    """The text of a llama-cpp-python result (a dict, or an iterator of chunk dicts)."""
    if not stream:
        c = out["choices"][0]
        return c["text"] if kind == "completion" else (c["message"]["content"] or "")
    if kind == "completion":
        return "".join(chunk["choices"][0]["text"] for chunk in out)
    return "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in out)


class Reference:
    """The same requests in this process, on Llamas made from the server's own settings."""

    def __init__(self, model: Path, transforms: dict[str, lingalign.Transform]) -> None:
        config = ServeConfig(model=str(model), n_ctx=CTX, n_threads=THREADS)
        settings = ModelSettings(**config.model_settings(model))
        self.plain = LlamaProxy.load_llama_from_model_settings(settings)
        self.steered = LlamaProxy.load_llama_from_model_settings(settings)
        self.steering = lingalign.attach(self.steered)
        self.transforms = transforms

    def text(self, kind: str, body: dict[str, Any], transform: str | None, alpha: float | None = None,
             positions: str | None = None) -> str:
        if transform is None:
            llm = self.plain
        else:
            llm = self.steered
            self.steering.set(self.transforms[transform], alpha=alpha, positions=positions)
        fields = {k: v for k, v in body.items() if k != "lingalign"}
        stream = bool(fields.get("stream"))
        if kind == "completion":
            out = llama_cpp.Llama.__call__(llm, **CreateCompletionRequest(**fields).model_dump(exclude=COMPLETION_EXCLUDE))
        else:
            out = llm.create_chat_completion(**CreateChatCompletionRequest(**fields).model_dump(exclude=CHAT_EXCLUDE))
        return _collect(kind, out, stream)


def ask(client: Any, kind: str, body: dict[str, Any]) -> tuple[str, dict[str, Any], Any]:
    """(text, the response's lingalign object, headers) of a request through the openai client;
    for a stream, every chunk's lingalign object must be the same."""
    params = {k: v for k, v in body.items() if k != "lingalign"}
    extra = {"lingalign": body["lingalign"]} if "lingalign" in body else None
    api = client.completions if kind == "completion" else client.chat.completions
    if not params.get("stream"):
        r = api.with_raw_response.create(**params, extra_body=extra)
        result = r.parse()
        choice = result.choices[0]
        text = choice.text if kind == "completion" else (choice.message.content or "")
        return text, result.model_extra["lingalign"], r.headers
    with api.with_streaming_response.create(**params, extra_body=extra) as r:
        chunks = list(r.parse())
        headers = r.headers
    reports = [c.model_extra["lingalign"] for c in chunks]
    assert chunks and all(rep == reports[0] for rep in reports)
    if kind == "completion":
        text = "".join(c.choices[0].text for c in chunks if c.choices)
    else:
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, reports[0], headers


def _body(kind: str, stream: bool = False, lingalign_field: Any = ..., prompt: str | None = None,
          max_tokens: int = MAX_TOKENS, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "tiny", "max_tokens": max_tokens, "temperature": 0, "stream": stream, **extra}
    if kind == "completion":
        body["prompt"] = prompt if prompt is not None else PROMPT
    else:
        body["messages"] = [{"role": "user", "content": prompt}] if prompt is not None else MESSAGES
    if lingalign_field is not ...:
        body["lingalign"] = lingalign_field
    return body


@pytest.fixture(scope="module")
def folder(tiny_model, tmp_path_factory) -> Path:
    """A transform for each embedded language (auto routes to them), one of each kind, and two
    with a position policy of their own."""
    d = tmp_path_factory.mktemp("served")
    for k, lang in enumerate(LANGS):
        kind = "additive" if lang == "deu" else "affine"
        t = _transform(tiny_model, [1, 2], kind=kind, seed=k, scale=1.5)
        dataclasses.replace(t, source_lang=lang).save(d / f"{lang}-eng.gguf")
    _transform(tiny_model, [0, 3], seed=20, scale=1.5, positions="generated").save(d / "late.gguf")
    _transform(tiny_model, [2], seed=21, scale=1.5, positions="last").save(d / "last.gguf")
    return d


@pytest.fixture(scope="module")
def reference(tiny_model, folder) -> Reference:
    return Reference(tiny_model, {p.stem: lingalign.Transform.load(p) for p in folder.glob("*.gguf")})


@pytest.fixture(scope="module")
def server(tiny_model, folder, tmp_path_factory):
    from lingalign.lexicon import Lexicon

    own = tmp_path_factory.mktemp("lexicons") / "fin.tsv"  # a user's lexicon, for a language none is shipped for
    Lexicon("fin", {"kissa": "cat", "istuu": "sits"}).save(own)
    s = Server(tmp_path_factory.mktemp("server"), tiny_model, "--transforms", str(folder), "--lexicon-file", str(own))
    yield s
    s.stop()


def _assert_no_traceback(server: Server) -> None:
    assert "Traceback" not in server.log(), server.log()[-3000:]


# -- what the server offers -----------------------------------------------------------------------
def test_lists_its_transforms_and_the_model(server, folder):
    status, headers, listing = server.raw("GET", "/lingalign/transforms")
    assert status == 200 and listing["default"] == "none"
    by_name = {d["name"]: d for d in listing["data"]}
    assert sorted(by_name) == sorted(p.stem for p in folder.glob("*.gguf"))
    assert by_name["deu-eng"] == {"name": "deu-eng", "method": "test", "source_lang": "deu", "target_lang": "eng",
                                  "alpha": 1.0, "positions": "all", "layers": [1, 2], "auto": True,
                                  "file": "deu-eng.gguf", "warnings": []}
    assert (by_name["late"]["positions"], by_name["late"]["auto"], by_name["late"]["source_lang"]) == ("generated", False, None)
    assert [m.id for m in server.main.models.list()] == ["tiny"]


# -- exactness ------------------------------------------------------------------------------------
CASES = [  # (lingalign field, transform the reference sets, its alpha, its positions)
    ({"transform": "spa-eng"}, "spa-eng", None, None),
    ({"transform": "deu-eng"}, "deu-eng", None, None),  # additive maps
    ({"transform": "late"}, "late", None, None),  # the file's policy: generated tokens only
    ({"transform": "spa-eng", "alpha": 0.5, "positions": "last"}, "spa-eng", 0.5, "last"),
    ({"transform": None}, None, None, None),
    (..., None, None, None),  # no field: the server's default, none
]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("kind", ["completion", "chat"])
def test_each_request_equals_the_same_transform_in_process(server, reference, kind, stream):
    client = server.main
    plain = reference.text(kind, _body(kind, stream), None)
    for field, name, alpha, positions in CASES:
        body = _body(kind, stream, field)
        text, report, headers = ask(client, kind, body)
        expected = reference.text(kind, body, name, alpha, positions)
        assert text == expected, (field, text, expected)
        assert headers["x-lingalign-transform"] == (name or "none")
        assert report["transform"] == name and report["language"] is None
        if name is not None:
            assert text != plain, field  # the transform changes this output: the comparison means something
            assert (report["alpha"], report["positions"]) == (alpha or 1.0, positions or reference.transforms[name].positions)


@pytest.mark.parametrize("kind", ["completion", "chat"])
def test_a_lexicon_request_reads_the_prompt_through_the_shipped_lexicon(server, reference, kind):
    """With "lexicon", the model reads the prompt (the last user message) with its gloss before it:
    exactly what the same Llama gives for the annotated prompt; a named transform still applies."""
    from lingalign.data import shipped_lexicon_path
    from lingalign.lexicon import Lexicon

    swahili = "Watu wengi wanaishi karibu na bahari kaskazini mwa nchi."
    annotated = Lexicon.load(shipped_lexicon_path("sw")).annotate(swahili)
    assert annotated != swahili
    for field, name in (({"lexicon": "sw"}, None), ({"lexicon": True}, None),
                        ({"lexicon": True, "transform": "spa-eng"}, "spa-eng")):
        text, report, _ = ask(server.main, kind, _body(kind, lingalign_field=field, prompt=swahili))
        # lexicon true with a named transform: the transform's language (spa), whose lexicon is shipped
        lang = "spa" if name else "swh"
        expected_prompt = Lexicon.load(shipped_lexicon_path(lang)).annotate(swahili)
        assert text == reference.text(kind, _body(kind, prompt=expected_prompt), name), field
        assert report["lexicon"] == lang and report["transform"] == name
    text, report, _ = ask(server.main, kind, _body(kind, lingalign_field={"lexicon": True}))  # English: none
    assert report["lexicon"] is None and text == reference.text(kind, _body(kind), None)
    finnish = "kissa istuu ikkunalla"  # --lexicon-file fin.tsv: the user's own lexicon serves "fi"
    text, report, _ = ask(server.main, kind, _body(kind, lingalign_field={"lexicon": "fi"}, prompt=finnish))
    expected = "(cat sits ikkunalla)\n" + finnish
    assert report["lexicon"] == "fin" and text == reference.text(kind, _body(kind, prompt=expected), None)
    _assert_no_traceback(server)


def test_auto_routes_each_embedded_language_and_english_to_none(server, reference):
    client = server.main
    for lang in EMBEDDED_LANGUAGES:
        lines = read_lines(embedded_path(lang))[:8]
        picks = []
        for line in lines:
            text, report, headers = ask(client, "completion", _body("completion", prompt=line, max_tokens=1,
                                                                    lingalign_field={"transform": "auto"}))
            assert headers["x-lingalign-transform"] == (report["transform"] or "none")
            assert headers["x-lingalign-language"] == (report["language"] or "unknown")
            picks.append(report["transform"])
        if lang == "eng":
            assert picks == [None] * len(lines)
            continue
        assert picks.count(f"{lang}-eng") >= 7 and all(p in (None, f"{lang}-eng") for p in picks), (lang, picks)
        # and the routed generation is the transform's, for the first sentence
        body = _body("completion", prompt=lines[0], lingalign_field={"transform": "auto"})
        text, report, _ = ask(client, "completion", body)
        assert report["transform"] == f"{lang}-eng" and text == reference.text("completion", body, f"{lang}-eng")


def test_load_8_clients_208_requests_each_identical_to_its_solo_run_rss_flat(server, reference):
    spa, eng = read_lines(embedded_path("spa"))[1], read_lines(embedded_path("eng"))[1]
    fields = [None, {"transform": "spa-eng"}, {"transform": "deu-eng"}, {"transform": "late"},
              {"transform": "cmn-eng", "alpha": 0.5, "positions": "last"}, {"transform": "auto"}]
    templates = []
    for k, (kind, stream) in enumerate([(kind, stream) for kind in ("completion", "chat") for stream in (False, True)]):
        for j, field in enumerate(fields):
            prompt = [PROMPT, spa, eng, "a cat sits on a mat"][(k + j) % 4]
            templates.append((kind, _body(kind, stream, field if field is not None else ..., prompt=prompt)))
    solo = [server.ask(kind, body)[:2] for kind, body in templates]
    for (kind, body), (text, report) in zip(templates, solo):  # the solo runs are exact
        name = report["transform"]
        f = body.get("lingalign") or {}
        assert text == reference.text(kind, body, name, f.get("alpha"), f.get("positions"))
    assert {r["transform"] for _, r in solo} == {None, "spa-eng", "deu-eng", "late", "cmn-eng"}

    def round_of(n_clients: int, per_client: int, seed: int) -> tuple[list[str], int]:
        problems: list[str] = []
        done = [0]

        def worker(c: int) -> None:
            rng = random.Random(seed * 100 + c)
            with server.client() as own:
                for _ in range(per_client):
                    i = rng.randrange(len(templates))
                    try:
                        got = ask(own, *templates[i])[:2]
                    except Exception as e:  # counted, not raised: every error is reported at the end
                        problems.append(f"template {i}: {type(e).__name__}: {e}")
                        continue
                    if got != solo[i]:
                        problems.append(f"template {i}: {got} != {solo[i]}")
                    done[0] += 1

        threads = [threading.Thread(target=worker, args=(c,)) for c in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert not any(t.is_alive() for t in threads)
        return problems, done[0]

    rss = [server.rss_kib()]
    timings = []
    for seed in (1, 2):
        start = time.perf_counter()
        problems, done = round_of(8, 26, seed)
        timings.append(time.perf_counter() - start)
        rss.append(server.rss_kib())
        assert problems == [] and done == 208
    print(f"\nload: 2 rounds of 208 requests from 8 clients in {timings[0]:.1f} s and {timings[1]:.1f} s, 0 errors, "
          f"0 differences; server RSS {rss[0] / 1024:.1f} -> {rss[1] / 1024:.1f} -> {rss[2] / 1024:.1f} MiB")
    assert rss[2] - rss[1] < 2048 and rss[1] - rss[0] < 8192, rss  # KiB: no growth per request
    _assert_no_traceback(server)


# -- bad input ------------------------------------------------------------------------------------
BAD = [  # (raw JSON of the lingalign field, words of the message)
    ('{"transform": "fra-eng"}', "unknown transform 'fra-eng'"),
    ('{"transform": "../../etc/spa-eng.gguf"}', "unknown transform"),
    ('{"transform": "spa-eng", "alpha": NaN}', "alpha nan is out of range"),
    ('{"transform": "spa-eng", "alpha": Infinity}', "alpha inf is out of range"),
    ('{"transform": "spa-eng", "alpha": 1e9}', "out of range"),
    ('{"transform": "spa-eng", "alpha": "strong"}', "must be a number"),
    ('{"transform": "spa-eng", "positions": "middle"}', "unknown position policy 'middle'"),
    ('"spa-eng"', '"lingalign" must be an object'),
    ('{"transform": 3}', "must be a transform name"),
    ('{"transfrom": "spa-eng"}', "unknown key 'transfrom'"),
    ('{"lexicon": 3}', "must be true, false or a language code"),
    ('{"lexicon": "xx"}', "no lexicon is served for 'xx'"),
]


@pytest.mark.parametrize("kind", ["completion", "chat"])
def test_bad_input_is_400_with_a_message_and_the_next_request_is_exact(server, reference, kind):
    client = server.main
    good = _body(kind, lingalign_field={"transform": "spa-eng"})
    expected = reference.text(kind, good, "spa-eng")
    path = "/completions" if kind == "completion" else "/chat/completions"
    for field, words in BAD:
        body = json.dumps(_body(kind))[:-1] + f', "lingalign": {field}}}'
        status, _, answer = server.raw("POST", path, body)
        message = answer["error"]["message"]
        assert status == 400 and words in message and "\n" not in message, (field, status, answer)
        assert ask(client, kind, good)[0] == expected
    with pytest.raises(openai.BadRequestError, match="unknown transform 'xx'"):  # as the openai client sees it
        ask(client, kind, _body(kind, lingalign_field={"transform": "xx"}))
    if kind == "completion":
        status, _, answer = server.raw("POST", path, json.dumps(_body(kind) | {"prompt": ["a", "b"]}))
        assert status == 400 and "one prompt per request" in answer["error"]["message"]
    assert ask(client, kind, good)[0] == expected
    _assert_no_traceback(server)


def test_api_key_is_401_before_anything_else(tiny_model, folder, reference, tmp_path):
    s = Server(tmp_path, tiny_model, "--transforms", str(folder), "--api-key", "sesame")
    try:
        for key in (None, "wrong"):
            assert s.raw("GET", "/lingalign/transforms", key=key)[0] == 401
            assert s.raw("POST", "/completions", json.dumps(_body("completion", lingalign_field={"transform": "xx"})),
                         key=key)[0] == 401
            with s.client(key or "unused") as c, pytest.raises(openai.AuthenticationError):
                ask(c, "chat", _body("chat", lingalign_field={"transform": "spa-eng"}))
        assert s.raw("POST", "/completions", json.dumps(_body("completion", lingalign_field={"transform": "xx"})),
                     key="sesame")[0] == 400
        assert s.raw("GET", "/lingalign/transforms", key="sesame")[0] == 200
        good = _body("chat", lingalign_field={"transform": "spa-eng"})
        with s.client("sesame") as c:
            assert ask(c, "chat", good)[0] == reference.text("chat", good, "spa-eng")
    finally:
        s.stop()


# -- streams that end early, requests that arrive together -----------------------------------------
def _open_stream(server: Server, body: dict[str, Any]) -> tuple[http.client.HTTPConnection, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("POST", "/v1/completions", json.dumps(body), {"content-type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    return conn, response


def _events(response: Any) -> Any:
    for line in response:
        if line.startswith(b"data: "):
            yield line[6:].strip()


def test_a_client_leaving_mid_stream_leaves_the_next_request_exact(server, reference):
    long = _body("completion", True, {"transform": "late"}, max_tokens=400, logit_bias=LONG)
    for follow in ({"transform": "late"}, {"transform": "spa-eng"}, None):
        conn, response = _open_stream(server, long)
        events = _events(response)
        for _ in range(3):
            assert json.loads(next(events))["lingalign"]["transform"] == "late"
        response.close()  # gone, mid-generation
        conn.close()
        for stream in (False, True):
            body = _body("completion", stream, follow if follow is not None else ...)
            name = follow["transform"] if follow else None
            assert server.ask("completion", body)[0] == reference.text("completion", body, name)
    _assert_no_traceback(server)


def _interrupt_scenario(server: Server, reference: Reference) -> tuple[str, str | None, str]:
    """A long stream A (spa-eng), then request B (late) once A has begun: returns A's text, A's
    last finish_reason, and A's full text run alone (in process); B must be exact either way."""
    a = _body("completion", True, {"transform": "spa-eng"}, max_tokens=400, logit_bias=LONG)
    b = _body("completion", False, {"transform": "late"})
    conn, response = _open_stream(server, a)
    events = _events(response)
    first = json.loads(next(events))
    b_result: list[Any] = []

    def send_b() -> None:
        with server.client() as c:
            b_result.append(ask(c, "completion", b))

    sender = threading.Thread(target=send_b)
    sender.start()
    chunks = [first]
    for data in events:
        if data == b"[DONE]":
            break
        chunks.append(json.loads(data))
    response.close()
    conn.close()
    sender.join(120)
    assert b_result and b_result[0][0] == reference.text("completion", b, "late")
    text = "".join(c["choices"][0]["text"] for c in chunks)
    finish = chunks[-1]["choices"][0]["finish_reason"]
    return text, finish, reference.text("completion", a, "spa-eng")


def test_a_request_arriving_during_a_stream_waits_for_it_by_default(server, reference):
    text, finish, alone = _interrupt_scenario(server, reference)
    assert finish == "length" and text == alone


def test_with_interrupt_requests_a_new_request_cuts_the_stream_short_and_both_stay_exact(tiny_model, folder, reference,
                                                                                        tmp_path):
    s = Server(tmp_path, tiny_model, "--transforms", str(folder), "--interrupt-requests")
    try:
        text, finish, alone = _interrupt_scenario(s, reference)
        assert finish is None and len(text) < len(alone) and alone.startswith(text)
        _assert_no_traceback(s)
    finally:
        s.stop()


class _Client:
    """The request object _publish asks whether the client is still there."""

    def __init__(self, leaves_after: int | None) -> None:
        self.asked, self.leaves_after = 0, leaves_after

    async def is_disconnected(self) -> bool:
        self.asked += 1
        return self.leaves_after is not None and self.asked >= self.leaves_after


class _Steered:
    def __init__(self, interrupt_requests: bool) -> None:
        self.interrupt_requests = interrupt_requests

    def start(self, llama: Any, selection: Any, call: Any, kwargs: dict[str, Any]) -> Any:
        return call(llama, **kwargs)


def _generation(log: list[tuple[str, bool]], fail_at: int | None = None) -> Any:
    from llama_cpp.server import app as upstream

    try:
        for i in range(1000):
            if i == fail_at:
                raise RuntimeError("llama_decode returned 1")
            yield {"choices": [{"text": str(i)}]}
    finally:
        # where the generation's clean-up runs: with the model lock held, in a worker thread
        log.append(("closed", upstream.llama_inner_lock.locked() and threading.current_thread() is not threading.main_thread()))


def _run_publisher(monkeypatch: pytest.MonkeyPatch, client: _Client, *, interrupt: bool = False,
                   fail_at: int | None = None, newcomer: bool = False) -> tuple[list[Any], list[tuple[str, bool]]]:
    """lingalign's stream publisher on a stand-in generation (no model): the events it sends and
    the order of what happened; `newcomer`: another request asks for the model after 2 chunks."""
    import anyio
    from llama_cpp.server import app as upstream

    from lingalign.serve import app as serve_app
    from lingalign.serve.selection import Selection

    monkeypatch.setattr(upstream, "prepare_request_resources", lambda *args: "llama")
    log: list[tuple[str, bool]] = []

    async def scenario() -> list[Any]:
        send, recv = anyio.create_memory_object_stream(1000)
        received: list[Any] = []

        async def other_request() -> None:
            while len(received) < 2:
                await anyio.sleep(0.001)
            async with contextlib.asynccontextmanager(upstream.get_llama_proxy)():
                log.append(("newcomer has the model", True))

        async def consume() -> None:
            async with recv:
                async for message in recv:
                    received.append(message["data"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            if newcomer:
                tg.start_soon(other_request)
            await serve_app._publish(client, send, None, None, lambda llama, **kw: _generation(log, fail_at), {},
                                     Selection(None, None, None), _Steered(interrupt))
        return received

    return anyio.run(scenario), log


def test_a_stream_whose_client_left_is_closed_with_the_model_lock_held(monkeypatch):
    events, log = _run_publisher(monkeypatch, _Client(leaves_after=3))
    assert [json.loads(e)["choices"][0]["text"] for e in events] == ["0", "1", "2"]  # no [DONE]: nobody listens
    assert log == [("closed", True)]


def test_an_interrupted_stream_is_closed_before_the_waiting_request_gets_the_model(monkeypatch):
    events, log = _run_publisher(monkeypatch, _Client(None), interrupt=True, newcomer=True)
    assert events[-1] == "[DONE]" and 2 <= len(events) - 1 < 1000
    assert log == [("closed", True), ("newcomer has the model", True)]
    events, log = _run_publisher(monkeypatch, _Client(None), interrupt=False, newcomer=True)
    assert len(events) == 1001 and log == [("closed", True), ("newcomer has the model", True)]  # ran to its end


def test_a_stream_that_fails_ends_with_an_openai_error_event_and_is_closed(monkeypatch):
    events, log = _run_publisher(monkeypatch, _Client(None), fail_at=2)
    assert len(events) == 3 and json.loads(events[-1])["error"]["message"] == "llama_decode returned 1"
    assert log == [("closed", True)]


# -- start-up -------------------------------------------------------------------------------------
def test_start_refuses_a_bad_default_or_a_transform_for_another_model(tiny_model, folder, tmp_path, capsys):
    assert main(["serve", "--model", str(tiny_model), "--transforms", str(folder), "--default", "fra-eng"]) == 1
    err = capsys.readouterr().err
    assert "--default 'fra-eng': not auto, none or a served transform" in err and err.count("\n") == 1
    other = dataclasses.replace(_transform(tiny_model, [1]), model=ModelFingerprint("llama", 64, 4, "0" * 64, "1" * 64))
    (tmp_path / "other").mkdir()
    other.save(tmp_path / "other" / "x.gguf")
    assert main(["serve", "--model", str(tiny_model), "--transforms", str(tmp_path / "other")]) == 1
    err = capsys.readouterr().err
    assert "x.gguf: transform was made for another model" in err and err.count("\n") == 1


# -- the default model ----------------------------------------------------------------------------
@pytest.mark.integration
def test_shipped_transforms_on_the_default_model(tmp_path):
    s = Server(tmp_path, None, "--shipped", "--default", "auto", ctx=512)
    try:
        shipped = {p.stem: lingalign.Transform.load(p) for p in shipped_dir().glob("*-eng.gguf")}
        from lingalign.models import resolve_model

        ref = Reference(resolve_model(None), shipped)
        client = s.main
        for lang, expected in (("spa", "spa-eng"), ("deu", "deu-eng"), ("eng", None)):
            body = _body("completion", prompt=read_lines(embedded_path(lang))[0], model="gemma3-270m")
            text, report, headers = ask(client, "completion", body)  # no field: --default auto
            assert report["transform"] == expected and report["language"] == lang
            assert text == ref.text("completion", body, expected)
        body = _body("completion", True, {"transform": "tur-eng", "alpha": 0.5}, prompt=read_lines(embedded_path("tur"))[0])
        assert ask(client, "completion", body)[0] == ref.text("completion", body, "tur-eng", 0.5)
        _assert_no_traceback(s)
    finally:
        s.stop()
