"""A quiet console: rlx's own lines, errors and the progress bar; library chatter goes to the run's log file.

vLLM alone prints ~20 start-up warnings and one `RotaryEmbedding: Failed to load weights` per weight sync (a
harmless message: rotary embeddings have no weights to reload). Under Hydra the root logger has a console
handler and a file handler (`<run dir>/<job>.log`); here the console handler drops every record that is not
rlx's or Hydra's unless it is an error, so the log file keeps everything. `rlx -v ...` (or
`hydra.verbose=true`) shows it all on the console again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

VERBOSE_ENV = "RLX_VERBOSE"  # set by `rlx -v`
CONSOLE_LOGGERS = ("rlx", "hydra", "__main__")  # records of these reach the console, unless FILE_ONLY
# `log.info(..., extra=FILE_ONLY)`: an rlx record for the log file only (the tiny-model build's per-evaluation
# lines, which the console shows as a progress bar)
FILE_ONLY = {"rlx_file_only": True}
_RLX_DIR = str(Path(__file__).resolve().parent)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def before_imports() -> None:
    """Set before torch and vLLM load (they read these at import): C++ warnings only when verbose."""
    if not verbose():
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")


class LibraryFilter(logging.Filter):
    """Passes rlx's and Hydra's records (but FILE_ONLY ones), anything at ERROR or above, and Python warnings
    raised by rlx."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "rlx_file_only", False) and record.levelno < logging.ERROR:
            return False
        if record.levelno >= logging.ERROR or record.name.split(".")[0] in CONSOLE_LOGGERS:
            return True
        if record.name == "py.warnings":  # "file:line: Category: message"
            text = record.getMessage()
            return text.startswith(_RLX_DIR) or ": rlx: " in text
        return False


def quiet_libraries(show_all: bool = False) -> None:
    """Route library logs and warnings to the log file only; call before vLLM is imported."""
    if show_all or verbose():
        os.environ[VERBOSE_ENV] = "1"  # the samplers show their loading bars too
        return
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM's records then reach the root logger's handlers
    logging.getLogger("vllm").setLevel(os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"))  # INFO: a line per step
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> the log file
    for handler in logging.getLogger().handlers:
        console = isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
        if console and not any(isinstance(f, LibraryFilter) for f in handler.filters):
            handler.addFilter(LibraryFilter())
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards"
        hf_logging.disable_default_handler()  # its own stderr handler: let the root logger's handlers decide
        hf_logging.enable_propagation()
    except ImportError:
        pass
