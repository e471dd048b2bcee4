"""How every smartseg process logs: one handler on the root logger, in the format ``SMARTSEG_LOG_FORMAT``
names: ``text`` for people, ``json`` (one object a line) for a log pipeline. Each process's main calls
``configure_logging`` once, before anything logs; Celery and uvicorn are told to leave the root alone.

JSON lines carry ``time``, ``level``, ``logger``, ``message`` and ``role``, the worker's ``region``, and
whatever a call passes with ``extra=``: a job's lines pass ``job_id`` (and, in the worker, ``region``,
``worker``, ``stage``, ``duration_s``), so a log search follows one job through every process. No line may
carry a secret: log the host of a URL, never the URL (``url_host``).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from smartseg.shared.settings import Settings

WORKER_ROLE = "worker"
PRINTED_LOGGER = "stdout"  # the logger of what is printed (JSON format)
# Loggers that print whole URLs or signed requests: httpx logs every request's URL (query string and
# all) at INFO; botocore and urllib3 log signed S3 requests at DEBUG. They never go below these levels.
LEVEL_FLOORS = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "botocore": logging.INFO,
    "boto3": logging.INFO,
    "s3transfer": logging.INFO,
    "urllib3": logging.INFO,
}
# Record attributes left out of JSON lines: uvicorn's ANSI-coloured copy of its message, and Celery's
# `data` (the task's arguments again, fence token included).
LEFT_OUT = ("color_message", "data", "taskName")


def configure_logging(settings: Settings, role: str) -> None:
    """Send every logger's records to stderr in the settings' format and level, ``role`` naming the
    process (api, worker, router, deliverer). Calling it again replaces what it set up."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(settings, role))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name, floor in LEVEL_FLOORS.items():
        logging.getLogger(name).setLevel(max(floor, root.level))
    logging.captureWarnings(True)  # a warning is a log line too, not a bare line on stderr
    if settings.log_format == "json":
        log_printed_lines()
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def log_printed_lines() -> None:
    """Make what is written to stdout log lines (logger ``stdout``, INFO), so that every line is JSON:
    some libraries print instead of logging, Celery even straight to the file descriptor (its shutdown
    notice). stdout becomes a pipe that a thread reads; the log handler writes to stderr."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    os.dup2(write_end, sys.stdout.fileno())
    os.close(write_end)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # a print reaches the pipe at once, not at exit
    logger = logging.getLogger(PRINTED_LOGGER)

    def pump() -> None:
        with open(read_end, encoding="utf-8", errors="replace") as printed:
            for line in printed:
                if line.strip():
                    logger.info(line.rstrip())

    threading.Thread(target=pump, name="printed-lines", daemon=True).start()


def url_host(url: str) -> str:
    """What a log line may say about a URL: its host, without user info, path or query string (which can
    carry a signature or a token)."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


class JsonLines(JsonFormatter):
    """python-json-logger's formatter, with ``time`` first: UTC, ISO 8601, to the millisecond."""

    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        when = datetime.fromtimestamp(record.created, UTC)
        log_record["time"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        super().add_fields(log_record, record, message_dict)


def formatter(settings: Settings, role: str) -> logging.Formatter:
    """The format of ``role``'s lines: JSON objects or text, as the settings say."""
    if settings.log_format == "json":
        static: dict[str, str] = {"role": role}
        if role == WORKER_ROLE:
            static["region"] = settings.region
        return JsonLines(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields=static,
            reserved_attrs=[*RESERVED_ATTRS, *LEFT_OUT],
        )
    label = f"{role}[{settings.region}]" if role == WORKER_ROLE else role
    return logging.Formatter(f"%(asctime)s {label} %(levelname)s %(name)s: %(message)s")


def _log_uncaught(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    logging.getLogger("smartseg").critical("uncaught exception", exc_info=(kind, value, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    logging.getLogger("smartseg").critical(
        "uncaught exception in thread %s",
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
