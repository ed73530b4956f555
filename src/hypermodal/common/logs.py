"""Logging on the command line: hypermodal's own messages on stderr, decoders kept quiet.

The stages decode untrusted files with pydicom, nibabel, Pillow and native codecs. When one of
them fails on a file, the stage records the file and the reason in its errors file and goes on;
the libraries, though, also log the failure with a traceback (pydicom logs every decoder that
fails), warn about odd values, and a Rust codec that panics prints its backtrace. None of that
is news for a handled file, so by default it is silenced; ``--verbose`` shows all of it.

The choice travels to worker processes through :data:`VERBOSE_ENV`: forked workers inherit the
settings, and a worker started afresh calls :func:`quiet_decoders` to apply them.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

#: set to ``"1"`` (verbose) or ``"0"`` by :func:`configure_logging`, read by worker processes
VERBOSE_ENV = "HYPERMODAL_VERBOSE"
#: the libraries whose log records and warnings are silenced unless verbose
DECODER_LIBRARIES = (
    "pydicom",
    "nibabel",
    "PIL",
    "pylibjpeg",
    "openjpeg",
    "libjpeg",
    "rle",
    "gdcm",
    "nrrd",
    "SimpleITK",
)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(verbose: bool = False) -> None:
    """Log to stderr (debug with ``verbose``, else info) and quiet the decoders unless verbose.

    Also sets :data:`VERBOSE_ENV` for the worker processes the stages start.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr
    )
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    quiet_decoders(verbose)


def quiet_decoders(verbose: bool | None = None) -> None:
    """Silence the decoders' log records, warnings and Rust backtraces, unless ``verbose``.

    Args:
        verbose: ``None`` reads :data:`VERBOSE_ENV` (what a worker process calls).
    """
    if verbose is None:
        verbose = os.environ.get(VERBOSE_ENV) == "1"
    level = logging.NOTSET if verbose else logging.CRITICAL + 1
    for name in DECODER_LIBRARIES:
        logging.getLogger(name).setLevel(level)
    if verbose:
        return
    libraries = "|".join(DECODER_LIBRARIES)
    warnings.filterwarnings("ignore", module=rf"({libraries})(\..*)?$")
    os.environ["RUST_BACKTRACE"] = "0"  # a panicking codec prints one line, not its stack
