"""Server throughput and latency: requests/s and p50/p95 latency at 1, 4 and 16 concurrent clients, through the
official `openai` client against `constrained-fc serve` on loopback, with and without the prompt cache, in two
workloads: BFCL `simple` questions each with their own tools ("distinct tools"), and BFCL `multiple` questions
all sent with one shared tool list ("same tools": every question offered the union of the first cases' tools).
Then a soak (`--soak N` requests) that records the server process's resident memory before and after.

    python benchmarks/serve.py [--model default] [--limit 24] [--clients 1 4 16] [--soak 200]

The server runs requests one at a time on one worker thread (the batched path does not exist yet), so
requests/s stays flat as clients grow while latency grows with the queue: that is what this measures.
"""
from __future__ import annotations

import concurrent.futures as futures
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tqdm import tqdm  # noqa: E402

from common import add_model_flag, md_table, model_label, parser, write_results  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _start(app):
    import uvicorn
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}/v1"


_CLIENTS = threading.local()


def _client(url: str):
    """One openai client per thread and server, reused like an application would (a new client per request
    would also grow this process's memory, which the soak measures)."""
    import openai
    cache = getattr(_CLIENTS, "by_url", None)
    if cache is None:
        cache = _CLIENTS.by_url = {}
    if url not in cache:
        cache[url] = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    return cache[url]


def _request(url: str, case, max_tokens: int) -> tuple[float, bool]:
    client = _client(url)
    messages, functions = case
    t0 = time.perf_counter()
    r = client.chat.completions.create(model="constrained-fc", messages=messages,
                                       tools=[{"type": "function", "function": f} for f in functions],
                                       max_tokens=max_tokens)
    return time.perf_counter() - t0, bool(r.choices[0].message.tool_calls)


def run_level(url: str, cases, clients: int, max_tokens: int) -> dict:
    t0 = time.perf_counter()
    with futures.ThreadPoolExecutor(clients) as pool:
        out = list(tqdm(pool.map(lambda c: _request(url, c, max_tokens), cases), total=len(cases),
                        desc=f"{clients} client(s)", leave=False))
    wall = time.perf_counter() - t0
    lat = sorted(x for x, _ in out)
    return {"clients": clients, "requests": len(out), "requests_per_s": round(len(out) / wall, 3),
            "p50_s": round(statistics.median(lat), 3), "p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3),
            "with_calls": sum(ok for _, ok in out)}


def main(argv=None) -> int:
    ap = parser(__doc__.splitlines()[0], "serve")
    add_model_flag(ap)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--soak", type=int, default=200, help="requests of the memory soak (0: skip)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--soak-only", action="store_true", help="only the soak (prompt cache on)")
    args = ap.parse_args(argv)
    from constrained_fc.eval.data import load_bfcl
    from constrained_fc.model import load_model
    from constrained_fc.server import create_app

    model, tok = load_model(args.model)
    n = args.limit or 24
    distinct = [(c.messages, c.functions) for c in load_bfcl("simple", data_dir=args.data, limit=n)]
    multiple = load_bfcl("multiple", data_dir=args.data, limit=n)
    shared_tools, seen = [], set()
    for c in multiple[:4]:
        for f in c.functions:
            if f["name"] not in seen:
                seen.add(f["name"])
                shared_tools.append(f)
    same = [(c.messages, shared_tools) for c in multiple]
    rows, soak = [], None
    for cache in ((True,) if args.soak_only else (False, True)):
        server, url = _start(create_app(model, tok, max_queue=256, prompt_cache=cache))
        _request(url, distinct[0], args.max_tokens)  # warm-up: grammar caches, first-call allocations
        for workload, cases in (("distinct tools", distinct), ("same tools", same)):
            for clients in ([] if args.soak_only else args.clients):
                rows.append({"workload": workload, "prompt_cache": cache,
                             **run_level(url, cases, clients, args.max_tokens)})
        if cache and args.soak:
            # Resident memory after each quarter: it must level off (the prompt cache is bounded), not climb.
            rss = [round(_rss_mb(), 1)]
            loop = [(distinct + same)[i % (2 * n)] for i in range(args.soak)]
            quarter = max(1, len(loop) // 4)
            rates = []
            for i in range(0, len(loop), quarter):
                rates.append(run_level(url, loop[i:i + quarter], 4, args.max_tokens)["requests_per_s"])
                rss.append(round(_rss_mb(), 1))
            soak = {"requests": args.soak, "rss_mb": rss, "requests_per_s": round(statistics.median(rates), 3)}
        server.should_exit = True
        time.sleep(0.5)
    md = [f"# Server throughput ({model_label(args.model)}, {n} requests per level, max_tokens {args.max_tokens}, "
          "one worker thread)", ""]
    if rows:
        md.append(md_table(rows, ["workload", "prompt_cache", "clients", "requests", "requests_per_s", "p50_s",
                                  "p95_s", "with_calls"]))
    if soak:
        md += ["", f"Soak (prompt cache on): {soak['requests']} requests at 4 clients, {soak['requests_per_s']} "
                   "requests/s; resident memory (MB) before and after each quarter: "
                   + " → ".join(str(x) for x in soak["rss_mb"]) + "."]
    out = write_results(args.out, rows, "\n".join(md) + "\n", {"soak": soak})
    print("\n".join(md))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
