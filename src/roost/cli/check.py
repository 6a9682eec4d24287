"""``roost check DATA``: verify a data directory offline (storage/check.py), print what is
wrong and what the broker will do about it; ``--repair`` accepts the loss of damaged logs.

Exit status: 0 every store is sound, 1 damage was found (or repaired: data was cut), 2 the
directory could not be checked (a broker holds it, or there is none).
"""

from __future__ import annotations

import sys

import click
import msgspec

from roost.core.catalog import Catalog
from roost.errors import DirectoryInUse, StorageFailure
from roost.storage.check import CheckReport, check_directory, repair_directory
from roost.storage.engine import METADATA_NAME
from roost.storage.fs import LOCAL_FS
from roost.storage.metadata import MetadataStore


@click.command("check")
@click.argument("data", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option(
    "--repair",
    is_flag=True,
    help="Cut damaged partition and journal logs at the damage and drop what follows (the "
    "data there is lost; acks in a cut journal are redelivered), lifting their quarantine.",
)
def check(data: str, as_json: bool, repair: bool) -> None:
    """Verify every store of the data directory DATA, offline: nothing is changed (unless
    --repair). Refuses while a broker holds the directory."""
    try:
        report = check_directory(data, _owners(data))
    except DirectoryInUse as e:
        click.echo(f"error: {e}: stop the broker first", err=True)
        sys.exit(2)
    except FileNotFoundError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    repaired = repair_directory(data, report) if repair and not report.ok else []
    if as_json:
        answer = msgspec.to_builtins(report)
        if repair:
            answer["repaired"] = msgspec.to_builtins(repaired)
        click.echo(msgspec.json.encode(answer).decode())
    else:
        _print(report)
        for recovered in repaired:
            for problem in recovered.problems:
                click.echo(f"repaired {recovered.log}: {problem}")
    sys.exit(0 if report.ok else 1)


def _owners(data: str) -> dict[str, str]:
    """Journal name -> its subscription, from the metadata when it can be read."""
    path = f"{data}/{METADATA_NAME}"
    try:
        store = MetadataStore.open(LOCAL_FS, path, read_only=True)
    except (OSError, StorageFailure):  # CorruptMetadata too: the check reports it
        return {}
    return Catalog(store).journal_owners()


def _print(report: CheckReport) -> None:
    shutdown = "clean" if report.clean_shutdown else "not clean (a crash, or still running)"
    click.echo(f"data directory {report.path}: last shutdown {shutdown}")
    for store in report.stores:
        owner = f" ({store.owner})" if store.owner else ""
        status = "ok" if store.ok else "DAMAGED"
        click.echo(
            f"{status:8} {store.store}{owner}: {store.segments} segment(s), "
            f"{store.records} record(s), {store.bytes} bytes"
        )
        for problem in store.problems:
            click.echo(f"         problem: {problem}")
        for note in store.notes:
            click.echo(f"         note: {note}")
    damaged = sum(not store.ok for store in report.stores)
    click.echo("every store is sound" if report.ok else f"{damaged} store(s) damaged")
