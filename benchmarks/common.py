"""What every benchmark shares: command-line flags, machine and library versions, and the results folder
(`results.json` as {"machine": {...}, "rows": [...]}, `results.md`, and a PNG)."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LIBRARIES = ("constrained_fc", "torch", "transformers", "llguidance", "lark", "jsonschema", "outlines",
             "outlines_core", "xgrammar", "peft", "trl")


def parser(description: str, default_out: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", default=str(ROOT / "results" / default_out), help="results folder")
    ap.add_argument("--data", default=None, help="data folder (default: $CONSTRAINED_FC_DATA or ../shared/data)")
    ap.add_argument("--limit", type=int, default=None, help="at most N items per suite / category (quick runs)")
    return ap


MODEL_HELP = ("'default' (the shipped fine-tune), 'base' (the untuned SmolLM2-135M-Instruct), or a local model or "
              "LoRA adapter directory")


def add_model_flag(ap: argparse.ArgumentParser) -> None:
    """`--model` of every benchmark that runs a model; the value goes to `constrained_fc.load_model`."""
    ap.add_argument("--model", default="default", help=MODEL_HELP)


def model_label(spec: str | None) -> str:
    return {None: "shipped fine-tune", "default": "shipped fine-tune",
            "base": "SmolLM2-135M-Instruct (base)"}.get(spec, spec)


def machine() -> dict:
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib.replace("_", "-"))
        except metadata.PackageNotFoundError:
            try:
                versions[lib] = metadata.version(lib)
            except metadata.PackageNotFoundError:
                versions[lib] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "processor": platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": _torch_threads(), "date": datetime.date.today().isoformat(),
            "libraries": versions}


def _torch_threads():
    try:
        import torch
        return torch.get_num_threads()
    except ImportError:
        return None


def write_results(out: str | Path, rows: list[dict], markdown: str, extra: dict | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "rows": rows}
    if extra:
        payload.update(extra)
    (out / "results.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", "utf-8")
    m = payload["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    footer = (f"\n\n_Machine: {m['cpus']} CPUs ({m['processor']}), Python {m['python']}, {m['date']}. "
              f"Libraries: {libs}._\n")
    (out / "results.md").write_text(markdown.rstrip("\n") + footer, "utf-8")
    return out


def md_table(rows: list[dict], columns: list[str], headers: list[str] | None = None) -> str:
    headers = headers or columns
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            if isinstance(v, float):
                v = f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
            cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
