"""The CLI's commands that talk to the API through the SDK: ``segment``, ``jobs``, ``regions``, ``usage``,
``backfill``. Human output by default (``rich``), the API's JSON with ``--json``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from smartseg.shared.client import Client, Segmentation, SegmentationFailed
from smartseg.shared.errors import ClientError
from smartseg.shared.jobstore import JobStatus
from smartseg.shared.mask_encoding import MASK_FORMATS

LIST_LIMIT = 20

out = Console(highlight=False, soft_wrap=True)  # a line per mask, whatever the width
err = Console(stderr=True, highlight=False)


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-url", help="the API (default: SMARTSEG_API_URL, else `smartseg up`'s env file)"
    )
    parser.add_argument("--api-key", help="an API key (default: SMARTSEG_API_KEY, else the env file)")


def add_api_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    segment = commands.add_parser(
        "segment", help="segment a local image or a URL; saves the masks and an overlay PNG"
    )
    segment.add_argument("image", help="a path, or an http(s) URL")
    segment.add_argument("prompts", nargs="+", metavar="PROMPT", help='what to segment, e.g. "red ball"')
    segment.add_argument("-o", "--out", type=Path, default=Path("smartseg-out"), help="folder for the files")
    segment.add_argument("--format", choices=MASK_FORMATS, help="mask file format (default png)")
    segment.add_argument("--pipeline", help="lite, grounded-sam, grounded-sam2, sam3 (default: the API's)")
    segment.add_argument("--max-masks", type=int, help="masks per prompt")
    segment.add_argument("--box-threshold", type=float)
    segment.add_argument("--text-threshold", type=float)
    segment.add_argument("--region", help="where to run it")
    segment.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default 120)")
    segment.add_argument("--json", action="store_true", help="print the job as the API returns it")
    add_connection_options(segment)

    jobs = commands.add_parser("jobs", help="your jobs: get, list, cancel")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    get = jobs_commands.add_parser("get", help="one job")
    get.add_argument("id")
    get.add_argument("--wait", type=float, default=0, help="wait up to N s for it to end")
    listing = jobs_commands.add_parser("list", help="newest first")
    listing.add_argument("--status", choices=[status.value for status in JobStatus])
    listing.add_argument("--batch-id")
    listing.add_argument("--limit", type=int, default=LIST_LIMIT, help=f"at most N (default {LIST_LIMIT})")
    cancel = jobs_commands.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("id")
    for sub in (get, listing, cancel):
        sub.add_argument("--json", action="store_true", help="print what the API returns")
        add_connection_options(sub)

    regions = commands.add_parser("regions", help="each region's health, queues and pipelines")
    regions.add_argument("--json", action="store_true")
    add_connection_options(regions)

    usage = commands.add_parser("usage", help="what your key was billed, over UTC days")
    usage.add_argument("--from", dest="start", metavar="YYYY-MM-DD", help="first day (default: 30 days ago)")
    usage.add_argument("--to", dest="end", metavar="YYYY-MM-DD", help="last day (default: today)")
    usage.add_argument("--by-day", action="store_true", help="one row a day")
    usage.add_argument("--json", action="store_true")
    add_connection_options(usage)

    backfill = commands.add_parser(
        "backfill",
        help="a local JSONL manifest through the batches API; results to a local JSONL (resumable)",
    )
    backfill.add_argument("manifest", type=Path, help="JSONL: one item a line")
    backfill.add_argument("--output", type=Path, help="results JSONL (default: MANIFEST.results.jsonl)")
    add_connection_options(backfill)


API_COMMANDS = ("segment", "jobs", "regions", "usage", "backfill")


def run_api_command(args: argparse.Namespace) -> int:
    """Exit 0 on success, 1 on a failed job or an API/client error (one line on stderr, no traceback)."""
    handlers: dict[str, Callable[[Client, argparse.Namespace], int]] = {
        "segment": command_segment,
        "jobs": command_jobs,
        "regions": command_regions,
        "usage": command_usage,
        "backfill": command_backfill,
    }
    try:
        with Client(args.api_url, args.api_key) as client:
            return handlers[args.command](client, args)
    except SegmentationFailed as exc:
        if getattr(args, "json", False):
            _print_json(exc.segmentation.job.model_dump(mode="json"))
        err.print(f"[red]smartseg {args.command}:[/] {exc}")
        return 1
    except ClientError as exc:
        err.print(f"[red]smartseg {args.command}:[/] {exc}")
        return 1
    except OSError as exc:  # an unreachable API, a missing file...
        err.print(f"[red]smartseg {args.command}:[/] {exc}")
        return 1


def command_segment(client: Client, args: argparse.Namespace) -> int:
    image = args.image
    if not image.startswith(("http://", "https://")) and not Path(image).is_file():
        raise ClientError(f"no such file: {image}")
    options = {
        "pipeline": args.pipeline,
        "output_format": args.format,
        "max_masks": args.max_masks,
        "box_threshold": args.box_threshold,
        "text_threshold": args.text_threshold,
        "region": args.region,
    }
    prompts = args.prompts
    with _waiting(f"segmenting {Path(image).name if '://' not in image else image}", args.json):
        if len(prompts) == 1:
            result = client.segment(image, prompts[0], timeout_s=args.timeout, **options)
        else:
            result = client.segment(image, prompts=prompts, timeout_s=args.timeout, **options)
        paths = result.save(args.out)
    if args.json:
        _print_json(result.job.model_dump(mode="json"))
        return 0
    _print_summary(result, paths)
    return 0


def _print_summary(result: Segmentation, paths: list[Path]) -> None:
    job = result.job
    total = f"{job.metrics.total_s:.2f} s" if job.metrics.total_s is not None else "?"
    pipeline = job.input.options.pipeline or "default pipeline"
    out.print(
        f"[bold]{job.id}[/] {job.status} in {job.region} ({pipeline}, {total}): "
        f"{len(result.masks)} mask{'s' if len(result.masks) != 1 else ''}"
    )
    saved = dict(zip((mask.filename for mask in result.masks), paths, strict=False))
    for prompt_result in job.prompt_results:
        masks = [mask for mask in result.masks if mask.prompt == prompt_result.prompt]
        if not masks:
            out.print(f"  {prompt_result.prompt!r}: [yellow]no match[/]")
        for mask in masks:
            x0, y0, x1, y1 = mask.box
            out.print(
                f"  {mask.prompt!r} -> {mask.label}  score {mask.score:.2f}  box [{x0}, {y0}, {x1}, {y1}]"
                f"  area {mask.area:,}  {saved.get(mask.filename, '')}"
            )
    overlays = [path for path in paths if path.name.endswith(".overlay.png")]
    if overlays:
        out.print(f"overlay: {overlays[0]}")
    missed = any(item.result == "no_match" for item in job.prompt_results)
    if missed and (job.input.options.pipeline or "lite") == "lite":
        out.print(lite_hint())


def lite_hint() -> str:
    """What `lite` can see, said where it matters: right after it found nothing."""
    from smartseg.worker.pipeline.lite import COLOR_NAMES, KIND_NAMES

    return (
        f"[dim]lite sees flat colour shapes only: colours ({', '.join(COLOR_NAMES)}) and shapes "
        f"({', '.join(KIND_NAMES)}), with left/right/top/bottom, largest/smallest and ordinals. Objects "
        "such as 'left shoe' need a model pipeline (--pipeline grounded-sam, see `smartseg models`).[/]"
    )


def command_jobs(client: Client, args: argparse.Namespace) -> int:
    if args.jobs_command == "list":
        jobs = list(client.list(status=args.status, batch_id=args.batch_id, limit=args.limit))
        if args.json:
            _print_json([job.job.model_dump(mode="json") for job in jobs])
            return 0
        table = Table("id", "status", "result", "prompts", "region", "masks", "created")
        for job in jobs:
            table.add_row(
                job.id,
                job.status,
                job.result or "",
                ", ".join(job.job.input.prompts),
                job.job.region,
                str(len(job.masks)),
                job.job.created_at,
            )
        out.print(table)
        return 0
    if args.jobs_command == "cancel":
        job = client.cancel(args.id)
    else:
        with _waiting(f"waiting for {args.id}", args.json or not args.wait):
            job = (
                client.get(args.id, wait_s=args.wait)
                if args.wait <= 60
                else client.wait(args.id, timeout_s=args.wait)
            )
    if args.json:
        _print_json(job.job.model_dump(mode="json"))
        return 0
    _print_summary(job, [])
    if job.error:
        out.print(f"  error: {job.error}")
    return 0


def command_regions(client: Client, args: argparse.Namespace) -> int:
    regions = client.regions()
    if args.json:
        _print_json([region.model_dump(mode="json") for region in regions])
        return 0
    table = Table("region", "healthy", "workers", "queued", "queued batch", "running", "pipelines")
    for region in regions:
        health = "[green]yes[/]" if region.healthy else "[red]no[/]"
        table.add_row(
            region.region,
            health,
            str(region.live_workers),
            str(region.queued_interactive),
            str(region.queued_batch),
            str(region.running),
            ", ".join(region.pipelines),
        )
    out.print(table)
    return 0


def command_usage(client: Client, args: argparse.Namespace) -> int:
    usage = client.usage(args.start, args.end, by_day=args.by_day)
    if args.json:
        _print_json(usage.model_dump(mode="json", by_alias=True))
        return 0
    out.print(
        f"{usage.from_date} .. {usage.to_date}: {usage.runs} billed run{'s' if usage.runs != 1 else ''}, "
        f"{usage.amount_usd} {usage.currency}"
    )
    if usage.days:
        table = Table("day", "runs", "amount")
        for day in usage.days:
            table.add_row(day.date, str(day.runs), f"{day.amount_usd} {usage.currency}")
        out.print(table)
    return 0


def command_backfill(client: Client, args: argparse.Namespace) -> int:
    output = args.output or args.manifest.with_suffix(".results.jsonl")
    try:
        return client.backfill(args.manifest, output)
    except KeyboardInterrupt:
        err.print(f"\nstopped: what finished is in {output}; run it again to go on")
        return 130


@contextmanager
def _waiting(what: str, quiet: bool) -> Iterator[None]:
    """A spinner on stderr while a request waits (none for --json or when stderr is not a terminal)."""
    if quiet or not err.is_terminal:
        yield
        return
    with err.status(what):
        yield


def _print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
