"""`constrained-fc serve`: an OpenAI-compatible chat-completions server over `generate`.

    app = create_app(model, tokenizer)            # FastAPI; `constrained-fc serve` runs it under uvicorn
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="constrained-fc", messages=[...], tools=[...])

One worker thread runs the model (torch on a CPU gains nothing from two generations at once), fed by a bounded
queue: a request that finds the queue full is answered 429 with `Retry-After`, never left hanging. A streaming
client that disconnects stops its generation between two tokens and frees its slot.

What a request may carry is OpenAI's chat-completions body; every field is checked here and a bad one is
answered 400 with an OpenAI error object naming the parameter (a bad tool schema: tool, JSON path and keyword).
Tool-call deltas of a stream are released once the call list is complete and validated, so a client never sees
a call that fails its schema; text streams token by token.
"""
from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from .errors import ConstrainedFCError, ContextLengthError

DEFAULT_MAX_TOKENS = 512
DEFAULT_MAX_QUEUE = 64
RETRY_AFTER_S = 2


class RequestError(Exception):
    """A request the server refuses: HTTP status, OpenAI error type, message and the parameter at fault."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 type: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.type, self.code = message, param, status, type, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ----------------------------------------------------------------------------------------------- requests
_TYPES = {"messages": list, "tools": list, "functions": list, "parallel_tool_calls": bool, "stream": bool,
          "max_tokens": int, "max_completion_tokens": int, "temperature": (int, float), "top_p": (int, float),
          "seed": int, "n": int, "stream_options": dict, "response_format": dict, "model": str,
          "retrieve": int}


@dataclass
class Request:
    """A checked chat-completions request, in `generate`'s terms."""
    messages: list
    tools: list | None
    tool_choice: Any
    parallel: bool
    max_tokens: int
    sampling: dict
    stop: list[str]
    response_format: dict | None
    stream: bool
    include_usage: bool
    model: str | None
    retrieve: int | None = None  # extension (openai client: extra_body={"retrieve": k}): top-k tool retrieval


def _name(v) -> str:
    return "boolean" if isinstance(v, bool) else type(v).__name__


def parse_request(body: Any) -> Request:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    for key, kind in _TYPES.items():
        v = body.get(key)
        if v is None:
            continue
        bad = isinstance(v, bool) and kind in (int, (int, float))
        if bad or not isinstance(v, kind):
            want = {list: "an array", bool: "a boolean", int: "an integer", dict: "an object",
                    str: "a string"}.get(kind, "a number")
            raise RequestError(f"'{key}' must be {want}, got {_name(v)}", param=key)
    if not body.get("messages"):
        raise RequestError("'messages' is required and must not be empty", param="messages")
    if body.get("n", 1) != 1:
        raise RequestError("only n=1 is supported", param="n")
    tools = body.get("tools")
    tool_choice = body.get("tool_choice", "auto" if tools else None)
    if body.get("functions") is not None:  # the legacy (pre-tools) request fields
        if tools is not None:
            raise RequestError("send either 'tools' or the legacy 'functions', not both", param="functions")
        tools = [{"type": "function", "function": f} for f in body["functions"]]
        fc = body.get("function_call", "auto")
        tool_choice = fc if isinstance(fc, str) else {"type": "function", "function": fc}
    if tool_choice is not None and not isinstance(tool_choice, (str, dict)):
        raise RequestError(f"'tool_choice' must be a string or an object, got {_name(tool_choice)}",
                           param="tool_choice")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(key)
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if max_tokens < 1:
        raise RequestError(f"'{key}' must be at least 1", param=key)
    temperature = body.get("temperature")
    top_p = body.get("top_p", 1.0)
    if temperature is not None and not 0 <= temperature <= 2:
        raise RequestError("'temperature' must be between 0 and 2", param="temperature")
    if not 0 < top_p <= 1:
        raise RequestError("'top_p' must be in (0, 1]", param="top_p")
    # Omitted temperature means greedy: a small model's most reliable setting (OpenAI's default would be 1).
    sampling = {"do_sample": bool(temperature), "temperature": float(temperature or 1.0), "top_p": float(top_p),
                "seed": body.get("seed")}
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise RequestError("'stop' must be a string or a list of up to 4 non-empty strings", param="stop")
    options = body.get("stream_options") or {}
    retrieve = body.get("retrieve")
    if retrieve is not None and retrieve < 1:
        raise RequestError("'retrieve' must be a positive number of tools", param="retrieve")
    return Request(messages=body["messages"], tools=tools, tool_choice=tool_choice,
                   parallel=body.get("parallel_tool_calls", True), max_tokens=max_tokens, sampling=sampling,
                   stop=stop, response_format=body.get("response_format"), stream=bool(body.get("stream")),
                   include_usage=bool(options.get("include_usage")), model=body.get("model"),
                   retrieve=retrieve)


# ----------------------------------------------------------------------------------------------- worker
@dataclass
class Job:
    request: Request
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)


_END = object()


class Worker:
    """One thread that runs the model, fed by a bounded queue of jobs."""

    def __init__(self, model, tokenizer, max_queue: int = DEFAULT_MAX_QUEUE, prompt_cache: Any = True,
                 retrieve: int | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.retrieve = retrieve  # the default top-k tool retrieval; a request's "retrieve" overrides it
        self.prompt_cache = prompt_cache  # shared by every request: the same tools or conversation skip prefill
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.served = 0
        self.cancelled = 0
        self._thread = threading.Thread(target=self._run, name="constrained-fc-worker", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise RequestError(f"the server is busy ({self.jobs.maxsize} requests waiting); retry shortly",
                               status=429, type="rate_limit_error", code="queue_full") from None

    def _emit(self, job: Job, item) -> None:
        job.loop.call_soon_threadsafe(job.events.put_nowait, item)

    def _run(self) -> None:
        from .runtime.decoding import generate
        while True:
            job = self.jobs.get()
            if job.cancelled.is_set():
                self.cancelled += 1
                continue
            r = job.request
            try:
                events = generate(self.model, self.tokenizer, r.messages, r.tools,
                                  tool_choice=r.tool_choice if r.tool_choice is not None else "auto",
                                  parallel=r.parallel, max_new_tokens=r.max_tokens,
                                  response_format=r.response_format, stream=True,
                                  prompt_cache=self.prompt_cache,
                                  retrieve=r.retrieve if r.retrieve is not None else self.retrieve, **r.sampling)
                for event in events:
                    if job.cancelled.is_set():
                        events.close()  # stops decoding between two tokens
                        self.cancelled += 1
                        break
                    self._emit(job, event)
                self.served += 1
            except ContextLengthError as e:
                self._emit(job, RequestError(str(e), param="messages", code="context_length_exceeded"))
            except ConstrainedFCError as e:
                self._emit(job, RequestError(str(e), param=_param_of(e)))
            except Exception as e:  # a bug: answered 500 with its type, the worker keeps serving
                self._emit(job, RequestError(f"internal error: {type(e).__name__}: {e}", status=500,
                                             type="server_error"))
            finally:
                self._emit(job, _END)


def _param_of(e: ConstrainedFCError) -> str | None:
    from .chat import ChatFormatError
    from .errors import ToolSchemaError
    if isinstance(e, ChatFormatError):
        return "messages"
    if isinstance(e, ToolSchemaError):
        return "tools"
    text = str(e)
    for p in ("tool_choice", "response_format", "max_new_tokens", "temperature", "top_p"):
        if p in text:
            return {"max_new_tokens": "max_tokens"}.get(p, p)
    return None


# ----------------------------------------------------------------------------------------------- responses
class _StopScanner:
    """Cuts text at the first stop string; holds back a tail that could still begin one."""

    def __init__(self, stops: list[str]):
        self.stops, self.text, self.sent, self.stopped = stops, "", 0, False

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        self.text += delta
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.sent = self.text[self.sent:cut], cut
            return out
        hold = max((len(s) - 1 for s in self.stops), default=0)
        safe = max(self.sent, len(self.text) - hold)
        out, self.sent = self.text[self.sent:safe], safe
        return out

    def flush(self) -> str:
        out = "" if self.stopped else self.text[self.sent:]
        self.sent = len(self.text)
        return out


def _calls_json(result) -> tuple[list[dict], list[dict]]:
    """(valid calls in OpenAI shape, invalid calls for the extension field)."""
    valid, invalid = [], []
    for c in result.tool_calls:
        if c.valid:
            valid.append({"id": c.id, "type": "function",
                          "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}})
        else:
            invalid.append({"name": c.name, "arguments": c.arguments, "error": c.error})
    return valid, invalid


def _extension(result, invalid: list[dict], withdrawn: list[int] | None = None) -> dict:
    s = result.stats
    ext = {"tokens_forced": s.tokens_forced, "forward_passes": s.forward_passes,
           "prefix_tokens_reused": s.prompt_tokens_reused,
           "prompt_ms": round(s.prompt_ms, 2), "decode_ms": round(s.decode_ms, 2),
           "mask_us_per_token": round(s.mask_us_per_token, 2), "invalid_tool_calls": invalid}
    if result.error:
        ext["error"] = result.error
    if withdrawn:
        ext["withdrawn_tool_calls"] = withdrawn
    if result.retrieved_tools is not None:
        ext["retrieved_tools"] = result.retrieved_tools
    return ext


def _usage(result) -> dict:
    s = result.stats
    return {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.tokens_generated,
            "total_tokens": s.prompt_tokens + s.tokens_generated}


def _finish_reason(result, valid_calls: list, stopped: bool) -> str:
    if valid_calls:
        return "tool_calls"
    if stopped:
        return "stop"
    return "length" if result.finish_reason == "length" else "stop"


# ----------------------------------------------------------------------------------------------- app
def create_app(model, tokenizer, *, model_id: str = "constrained-fc", max_queue: int = DEFAULT_MAX_QUEUE,
               prompt_cache: Any = True, retrieve: int | None = None):
    """The FastAPI app serving `model`. Runs with any ASGI server; `serve()` uses uvicorn. `prompt_cache`:
    True (the process-wide cache), False, or a `PromptCache`. `retrieve`: offer each request only the top-k
    of its tools (see `retrieval`); a request's own `retrieve` field overrides it."""
    app = FastAPI(title="constrained_fc", version="0.1.0")
    worker = Worker(model, tokenizer, max_queue=max_queue, prompt_cache=prompt_cache, retrieve=retrieve)
    app.state.worker = worker
    created = int(time.time())

    def error_response(e: RequestError) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if e.status == 429 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(_, e: RequestError):
        return error_response(e)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created,
                                            "owned_by": "constrained_fc"}]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "queued": worker.jobs.qsize(), "served": worker.served,
                "cancelled": worker.cancelled}

    @app.post("/v1/chat/completions")
    async def chat_completions(http: HTTPRequest):
        raw = await http.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(f"the request body is not valid JSON: {e}") from None
        req = parse_request(body)
        job = Job(req, asyncio.get_running_loop())
        worker.submit(job)
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        if req.stream:
            first = await job.events.get()  # errors found before decoding are still a 4xx, not a stream
            if isinstance(first, RequestError):
                await job.events.get()  # the end marker
                return error_response(first)
            return EventSourceResponse(_stream(job, first, rid, created, model_id),
                                       ping=15, send_timeout=30)
        try:
            result = None
            while True:
                item = await job.events.get()
                if item is _END:
                    break
                if isinstance(item, RequestError):
                    raise item
                if "result" in item:
                    result = item["result"]
        except asyncio.CancelledError:
            job.cancelled.set()
            raise
        valid, invalid = _calls_json(result)
        scanner = _StopScanner(req.stop)
        content = scanner.feed(result.content or "") + scanner.flush()
        message = {"role": "assistant", "content": content if (content or not valid) else None}
        if valid:
            message["tool_calls"] = valid
        return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model_id,
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": _finish_reason(result, valid, scanner.stopped)}],
                "usage": _usage(result), "constrained_fc": _extension(result, invalid)}

    async def _stream(job: Job, first, rid: str, created_at: int, mid: str):
        req = job.request

        def chunk(delta: dict, finish: str | None = None, **extra) -> str:
            return json.dumps({"id": rid, "object": "chat.completion.chunk", "created": created_at, "model": mid,
                               "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                            "finish_reason": finish}], **extra}, ensure_ascii=False)

        scanner = _StopScanner(req.stop)
        held: list[dict] = []  # tool-call deltas, released once the calls are validated
        result = None
        try:
            yield chunk({"role": "assistant", "content": ""})
            item = first
            while item is not _END:
                if isinstance(item, RequestError):  # failed mid-way: report it as the last event
                    yield json.dumps(item.body())
                    break
                if "content" in item:
                    text = scanner.feed(item["content"])
                    if text:
                        yield chunk({"content": text})
                    if scanner.stopped:
                        job.cancelled.set()  # a stop string: nothing after it is wanted
                if "tool_calls" in item:
                    held.extend(item["tool_calls"])
                if "result" in item:
                    result = item["result"]
                    tail = scanner.flush()
                    if tail:
                        yield chunk({"content": tail})
                item = await job.events.get()
                if item is _END:
                    break
            if result is None and scanner.stopped:
                # Stopped by a stop string: the generator was closed before its final event.
                yield chunk({}, "stop")
            elif result is not None:
                valid, invalid = _calls_json(result)
                ok_ids = {c["id"] for c in valid}
                # Valid calls keep their order and are numbered 0, 1, ... as a client accumulates them.
                renumber: dict[int, int] = {}
                for d in held:
                    if d.get("id") in ok_ids and d["index"] not in renumber:
                        renumber[d["index"]] = len(renumber)
                for d in held:
                    if d["index"] in renumber:
                        yield chunk({"tool_calls": [{**d, "index": renumber[d["index"]]}]})
                withdrawn = sorted({d["index"] for d in held} - set(renumber))
                yield chunk({}, _finish_reason(result, valid, scanner.stopped),
                            constrained_fc=_extension(result, invalid, withdrawn))
                if req.include_usage:
                    yield json.dumps({"id": rid, "object": "chat.completion.chunk", "created": created_at,
                                      "model": mid, "choices": [], "usage": _usage(result)})
            yield "[DONE]"
        except asyncio.CancelledError:  # the client went away: stop generating, free the slot
            job.cancelled.set()
            raise
        finally:
            if result is None:
                job.cancelled.set()  # ended early (disconnect, stop string, error): free the worker

    return app


def serve(model_spec: str | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          max_queue: int = DEFAULT_MAX_QUEUE, retrieve: int | None = None) -> None:
    """Load the model (the shipped fine-tune by default) and serve it until interrupted."""
    import uvicorn

    from .model import load_model
    model, tokenizer = load_model(model_spec)
    app = create_app(model, tokenizer, max_queue=max_queue, retrieve=retrieve)
    uvicorn.run(app, host=host, port=port, log_level="info")
