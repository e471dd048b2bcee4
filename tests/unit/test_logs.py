"""Log lines: JSON objects with the fields a log pipeline indexes, or text for people; in JSON mode every
line a process writes is one, printed lines, warnings and uncaught errors included; loggers that print
whole URLs never get to."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from smartseg.shared.logs import formatter, url_host
from smartseg.shared.settings import Settings


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("smartseg.worker.runner", logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_a_json_line_has_the_indexed_fields_and_the_jobs() -> None:
    settings = Settings(log_format="json", region="eu-west")
    line = formatter(settings, "worker").format(
        record(
            "job %s fetch done in %.3fs",
            "seg_1",
            0.25,
            job_id="seg_1",
            stage="fetch",
            duration_s=0.25,
            color_message="\x1b[32mjob\x1b[0m",  # uvicorn's coloured copy: left out
        )
    )
    parsed = json.loads(line)
    assert list(parsed)[:4] == ["time", "level", "logger", "message"]
    assert parsed["time"].endswith("Z") and len(parsed["time"]) == len("2026-01-01T00:00:00.000Z")
    assert {key: parsed[key] for key in parsed if key != "time"} == {
        "level": "INFO",
        "logger": "smartseg.worker.runner",
        "message": "job seg_1 fetch done in 0.250s",
        "role": "worker",
        "region": "eu-west",
        "job_id": "seg_1",
        "stage": "fetch",
        "duration_s": 0.25,
    }
    api = json.loads(formatter(settings, "api").format(record("up")))
    assert api["role"] == "api" and "region" not in api  # only a worker serves one region


def test_a_text_line_names_the_process() -> None:
    line = formatter(Settings(region="eu-west"), "worker").format(record("job %s claimed", "seg_1"))
    assert line.endswith(" worker[eu-west] INFO smartseg.worker.runner: job seg_1 claimed")
    assert " router INFO " in formatter(Settings(), "router").format(record("x"))


def test_a_url_is_logged_by_its_host_only() -> None:
    assert url_host("https://user:pw@hooks.example.com:8443/in?token=abc") == "hooks.example.com"
    assert url_host("not a url") == "?" and url_host("http://[::1") == "?"


PROCESS = """
import logging, sys, threading, time, warnings
from smartseg.shared.logs import configure_logging
from smartseg.shared.settings import Settings
configure_logging(Settings(log_format=sys.argv[1]), "router")
logging.getLogger("smartseg.worker.router").info("moved %d messages", 3, extra={"job_id": "seg_1"})
logging.getLogger("httpx").info("HTTP Request: GET https://example.com/x?token=SECRET")
print("printed by a library")
warnings.warn("a library's warning", stacklevel=1)
threading.Thread(target=lambda: 1 / 0, name="worker-thread").start()
time.sleep(0.2)
raise RuntimeError("uncaught")
"""


def run_process(log_format: str) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROCESS, log_format],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).splitlines()


def test_in_json_mode_every_line_a_process_writes_is_json() -> None:
    code, lines = run_process("json")
    assert code == 1
    records = [json.loads(line) for line in lines]  # each line, or this fails
    by_message = {entry["message"]: entry for entry in records}
    assert by_message["moved 3 messages"]["job_id"] == "seg_1"
    assert by_message["printed by a library"]["logger"] == "stdout"
    assert any("a library's warning" in entry["message"] for entry in records)
    thread = by_message["uncaught exception in thread worker-thread"]
    assert thread["level"] == "CRITICAL" and "ZeroDivisionError" in thread["exc_info"]
    assert "RuntimeError: uncaught" in by_message["uncaught exception"]["exc_info"]
    assert all(entry["role"] == "router" for entry in records)
    assert not any("SECRET" in line for line in lines)  # httpx's INFO lines print whole URLs


def test_in_text_mode_lines_are_for_people() -> None:
    code, lines = run_process("text")
    assert code == 1
    assert any(line.endswith(" router INFO smartseg.worker.router: moved 3 messages") for line in lines)
    assert "printed by a library" in lines  # left as it is
    assert not any("SECRET" in line for line in lines)
