"""``deeptrust dlq list | show | redrive``: look at dead letters and send them back.

An operator who fixed what a stage rejected (a missing object restored, a bug fixed) lists
the letters, looks at one, dry-runs the redrive, then redrives: each letter's original
message goes back to the topic its stage reads, once (``deeptrust.streams.redrive_kafka``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from deeptrust.schemas.events import DeadLetterRedrive
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.errors import Reason
from deeptrust.streams.redrive import STAGE_INPUTS, Decision, Letter, LetterFilter, Verdict, select
from deeptrust.streams.redrive_kafka import (
    MissingTopic,
    RedriveSettings,
    read_letters,
    read_redriven,
    redrive,
)
from deeptrust.training_cli import _TIMES as TIMES

DETAIL_WIDTH = 60
PREVIEW_BYTES = 64


def _filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``list`` and ``redrive`` share to say which letters they mean."""
    options = [
        click.option(
            "--stage",
            "stages",
            multiple=True,
            type=click.Choice(sorted(STAGE_INPUTS)),
            help="Only letters from this stage (repeatable).",
        ),
        click.option(
            "--reason",
            "reasons",
            multiple=True,
            type=click.Choice([reason.value for reason in Reason]),
            help="Only letters with this reason (repeatable).",
        ),
        click.option("--since", type=click.DateTime(TIMES), help="Failed at or after (UTC)..."),
        click.option("--until", type=click.DateTime(TIMES), help="...and before (UTC)."),
        click.option(
            "--timeout",
            type=float,
            default=60.0,
            show_default=True,
            help="Seconds to read the topics to their end.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _letter_filter(
    stages: Sequence[str],
    reasons: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    ids: Sequence[str] = (),
) -> LetterFilter:
    return LetterFilter(
        stages=frozenset(stages),
        reasons=frozenset(reasons),
        ids=frozenset(ids),
        since=since.replace(tzinfo=UTC) if since else None,
        until=until.replace(tzinfo=UTC) if until else None,
    )


class _DlqGroup(click.Group):
    """Turns a read that did not reach a topic's end into a message, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TimeoutError as error:
            raise click.ClickException(f"{error}; a larger --timeout may do") from error
        except MissingTopic as error:
            raise click.ClickException(str(error)) from error


@click.group("dlq", cls=_DlqGroup)
def dlq() -> None:
    """Look at dead letters (dlq.v1) and redrive them once their cause is fixed."""


@dlq.command("list")
@_filter_options
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def dlq_list(
    stages: tuple[str, ...],
    reasons: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    timeout: float,
    limit: int,
) -> None:
    """A table of the dead letters, oldest first, and how many there are of each kind."""
    kafka = KafkaSettings()
    wanted = _letter_filter(stages, reasons, since, until)
    letters = select(read_letters(kafka, wanted, timeout), wanted)
    redriven = read_redriven(kafka, timeout)
    rows = [_row(letter, kafka.topic_prefix, letter.id in redriven) for letter in letters[:limit]]
    header = ("ID", "FAILED AT", "STAGE", "REASON", "SOURCE", "KEY", "REDRIVEN", "DETAIL")
    for line in aligned([header, *rows]):
        click.echo(line)
    click.echo(summary(letters, limit))


@dlq.command("show")
@click.argument("letter_id")
@click.option("--timeout", type=float, default=60.0, show_default=True)
def dlq_show(letter_id: str, timeout: float) -> None:
    """One dead letter in full: LETTER_ID is its id, or a prefix of it that only it has."""
    kafka = KafkaSettings()
    found = [
        letter
        for letter in read_letters(kafka, LetterFilter(), timeout)
        if letter.id.startswith(letter_id)
    ]
    if len({letter.id for letter in found}) != 1:
        what = "no dead letter" if not found else f"{len(found)} dead letters"
        raise click.ClickException(f"{what} with an id starting {letter_id!r}")
    letter = found[0]
    for line in describe(letter, read_redriven(kafka, timeout).get(letter.id)):
        click.echo(line)


@dlq.command("redrive")
@_filter_options
@click.option("--id", "ids", multiple=True, help="Only the letter with this id (repeatable).")
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Redrive at most this many."
)
@click.option("--dry-run", is_flag=True, help="Say what would be redriven; send nothing.")
def dlq_redrive(
    stages: tuple[str, ...],
    reasons: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    timeout: float,
    ids: tuple[str, ...],
    limit: int | None,
    dry_run: bool,
) -> None:
    """Send letters' original messages back to their stage's input topic, each once.

    The message goes back as it was (key, value, headers: the same event id), to its own
    partition; a letter redriven before is skipped. A letter whose stage is unknown, or
    whose source topic is not that stage's input, is refused.
    """
    kafka = KafkaSettings()
    wanted = _letter_filter(stages, reasons, since, until, ids)
    letters = select(read_letters(kafka, wanted, timeout), wanted)
    decisions = redrive(kafka, letters, RedriveSettings(kafka_timeout_s=timeout), limit, dry_run)
    for decision in decisions:
        click.echo(outcome_line(decision, dry_run))
    click.echo(totals(decisions, dry_run))


def _row(letter: Letter, prefix: str, redriven: bool) -> tuple[str, ...]:
    event = letter.event
    detail = " ".join(event.detail.split())
    return (
        letter.id,
        event.failed_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        event.stage,
        event.reason,
        f"{event.source_topic.removeprefix(prefix)}[{event.source_partition}]@{event.source_offset}",
        event.original_key or "-",
        "yes" if redriven else "no",
        detail if len(detail) <= DETAIL_WIDTH else detail[: DETAIL_WIDTH - 1] + "…",
    )


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as lines of left-aligned columns, two spaces apart (the last one unpadded)."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def summary(letters: Sequence[Letter], limit: int) -> str:
    """How many letters matched, by stage and reason, and whether the table was cut short."""
    kinds = Counter((letter.event.stage, letter.event.reason) for letter in letters)
    by_kind = ", ".join(f"{stage} {reason}: {n}" for (stage, reason), n in sorted(kinds.items()))
    line = f"{len(letters)} dead letters" + (f" ({by_kind})" if by_kind else "")
    if len(letters) > limit:
        line += f"; the first {limit} shown (--limit)"
    return line


def describe(letter: Letter, redriven: DeadLetterRedrive | None) -> list[str]:
    """Every field of ``letter``, its headers, and the original event decoded when it can be."""
    event = letter.event
    lines = [
        f"dead letter  {letter.id}",
        f"failed at    {event.failed_at.isoformat()}",
        f"stage        {event.stage}",
        f"reason       {event.reason}",
        f"detail       {event.detail}",
        f"source       {event.source_topic} partition {event.source_partition} "
        f"offset {event.source_offset}",
        f"key          {event.original_key}",
        "redriven     "
        + ("no" if redriven is None else f"yes, at {redriven.redriven_at.isoformat()}"),
        *_section("headers", letter.headers),
        *_section("original headers", event.original_headers),
        "original value",
    ]
    value = letter.original_value
    try:
        decoded = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        preview = value[:PREVIEW_BYTES]
        more = "…" if len(value) > PREVIEW_BYTES else ""
        lines.append(f"  {len(value)} bytes, not JSON: {preview!r}{more}")
    else:
        lines += ["  " + line for line in json.dumps(decoded, indent=2).splitlines()]
    return lines


def _section(title: str, values: Mapping[str, str]) -> list[str]:
    return [title, *(f"  {name}: {value}" for name, value in sorted(values.items()))]


def outcome_line(decision: Decision, dry_run: bool) -> str:
    """One line per letter: what was (or would be) done with it."""
    event = decision.letter.event
    what = {
        Verdict.REDRIVE: "would redrive" if dry_run else "redriven",
        Verdict.ALREADY_REDRIVEN: "skipped",
        Verdict.REFUSED: "refused",
    }[decision.verdict]
    why = {
        Verdict.REDRIVE: f"to {event.source_topic}[{event.source_partition}]",
        Verdict.ALREADY_REDRIVEN: "already redriven",
        Verdict.REFUSED: decision.why,
    }[decision.verdict]
    letter = decision.letter
    return f"{what}  {letter.id}  {event.stage} {event.reason} {event.original_key}: {why}"


def totals(decisions: Sequence[Decision], dry_run: bool) -> str:
    """The counts an operator checks: redriven, skipped as already redriven, refused."""
    count = Counter(decision.verdict for decision in decisions)
    verb = "would redrive" if dry_run else "redriven"
    line = (
        f"{verb} {count[Verdict.REDRIVE]}, skipped {count[Verdict.ALREADY_REDRIVEN]} "
        f"(already redriven), refused {count[Verdict.REFUSED]}"
    )
    return line + ("; dry run: nothing was sent" if dry_run else "")
