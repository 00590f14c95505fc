"""Output a person reads: our own steps, one line each; library banners and warnings only with `--verbose`.

Without `--verbose` the CLI hides Lightning's "GPU available" / tips / "`Trainer.fit` stopped" lines, MLflow's
INFO lines and artifact download bars, and every third-party Python warning (deprecations, schema hints);
errors still show. Set before the libraries are imported (they read some settings once, at import).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings

QUIET_ENV = "OFFERLAB_QUIET"
# loggers whose INFO lines are banners, not steps (children set here are not reset when lightning is imported)
NOISY = ("alembic", "urllib3", "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
         "lightning.pytorch.accelerators.cuda", "lightning.fabric.utilities.seed", "lightning.pytorch.utilities.seed",
         "optuna", "httpx", "bentoml", "numexpr.utils", "matplotlib")


class _StepFormatter(logging.Formatter):
    """Our INFO lines as they are; warnings and errors prefixed with their level."""

    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return msg if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {msg}"


def configure(verbose: bool) -> None:
    """Logging and warnings for one CLI invocation."""
    root = logging.getLogger()
    for h in list(root.handlers):  # one handler, ours (a second invocation in one process replaces it)
        if getattr(h, "_offerlab", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._offerlab = True  # type: ignore[attr-defined]
    if verbose:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.setLevel(logging.DEBUG)
        os.environ.pop(QUIET_ENV, None)
        for name in NOISY:
            logging.getLogger(name).setLevel(logging.NOTSET)
    else:
        handler.setFormatter(_StepFormatter("%(message)s"))
        root.setLevel(logging.WARNING)
        logging.getLogger("offerlab").setLevel(logging.INFO)
        os.environ[QUIET_ENV] = "1"
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        for name in NOISY:
            logging.getLogger(name).setLevel(logging.ERROR)
        for name in ("lightning", "lightning.pytorch", "lightning.fabric", "mlflow"):
            logger = logging.getLogger(name)
            if logger.level:  # imported already (an earlier invocation in this process): quiet it now
                logger.setLevel(logging.ERROR)
        warnings.simplefilter("ignore")
    root.addHandler(handler)


def is_quiet() -> bool:
    return os.environ.get(QUIET_ENV) == "1"


@contextlib.contextmanager
def hushed():
    """Swallow what a library prints straight to stderr (MLflow's "Successfully registered model ...") when quiet."""
    if not is_quiet():
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()):
        yield
