"""``roost repair``: reopen failed logs in place, through the running broker's admin API.

A log whose write or fsync failed refuses writes (``/readyz`` and
``roost_partition_write_failed`` name it). The broker repairs it by itself once a probe write
succeeds; after fixing the disk an operator need not wait for that. Exit status 1 while a log
still refuses writes, so a script can retry.
"""

from __future__ import annotations

import click

from roost.cli.admin_api import AdminApi, ApiError, authorization
from roost.cli.session import Settings, echo_json, fail, json_option
from roost.storage.repair import RepairResult


@click.command()
@json_option
@click.pass_context
def repair(ctx: click.Context, as_json: bool) -> None:
    """Reopen every log whose write or fsync failed, verified from disk (needs admin)."""
    settings = ctx.find_object(Settings) or Settings()
    credentials = settings.user
    if credentials is not None and ":" not in credentials:
        password = click.prompt(f"password of {credentials}", hide_input=True, err=True)
        credentials = f"{credentials}:{password}"
    api = AdminApi(
        settings.admin_url, authorization(settings.token, credentials), ca_file=settings.ca_file
    )
    try:
        result = api.call("POST", "/api/v1/storage/repair", RepairResult)
    except ApiError as e:
        fail(ctx, str(e))
    if as_json:
        echo_json(result)
    else:
        for report in result.repaired:
            click.echo(
                f"repaired {report.log}: end offset {report.end_offset}, "
                f"{report.records_cut} unconfirmed records cut, "
                f"{report.records_lost} records the disk lost (it had failed with: {report.cause})"
            )
        for failed in result.still_failed:
            click.echo(f"still refuses writes: {failed.log}: {failed.error}")
        if not result.repaired and not result.still_failed:
            click.echo("no log had failed")
    if result.still_failed:
        ctx.exit(1)
