"""``roost exchange ...``, ``roost bind`` and ``roost unbind``: routing, declared and inspected.

A binding's ``--header name=value`` matches that value; ``--header name`` matches the header
with any value (headers exchanges). ``bind`` and ``unbind`` say whether anything changed: the
same binding twice is bound once, and unbinding one that is not there changes nothing.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import click

from roost.cli import render
from roost.cli.session import done, echo_json, json_option, run, show
from roost.client.api import Client
from roost.core.routing import KINDS, BindingSpec, ExchangeKind, ExchangeSpec


@click.group()
def exchange() -> None:
    """Exchanges: route a message to topics by key, pattern, headers or hash."""


@exchange.command("declare")
@click.argument("name")
@click.argument("kind", type=click.Choice(KINDS))
@click.option(
    "--alternate", default=None, metavar="EXCHANGE", help="Where messages no binding matches go on."
)
@json_option
def exchange_declare(name: str, kind: ExchangeKind, alternate: str | None, as_json: bool) -> None:
    """Declare exchange NAME of KIND (declaring the same one again is fine)."""
    spec = run(lambda c: c.declare_exchange(name, kind, alternate=alternate))
    done(as_json, spec, f"declared {kind} exchange {name}")


@exchange.command("list")
@json_option
def exchange_list(as_json: bool) -> None:
    """Every exchange with its bindings."""

    async def listed(client: Client) -> tuple[list[ExchangeSpec], list[BindingSpec]]:
        return await asyncio.gather(client.list_exchanges(), client.list_bindings())

    exchanges, bindings = run(listed)
    if as_json:
        echo_json(
            [
                {
                    "name": e.name,
                    "kind": e.kind,
                    "alternate": e.alternate,
                    "bindings": [b for b in bindings if b.exchange == e.name],
                }
                for e in exchanges
            ]
        )
    else:
        show(render.exchanges_table(exchanges, bindings))


@exchange.command("delete")
@click.argument("name")
@json_option
def exchange_delete(name: str, as_json: bool) -> None:
    """Delete exchange NAME and its bindings."""
    run(lambda c: c.delete_exchange(name))
    done(as_json, {"deleted": name}, f"deleted exchange {name}")


def _binding_command(verb: Literal["bind", "unbind"]) -> click.Command:
    """``bind`` and ``unbind``: the same arguments, opposite effects."""

    @click.argument("exchange_name", metavar="EXCHANGE")
    @click.argument("topic")
    @click.option("--key", default="", help="Routing key (direct) or pattern (topic).")
    @click.option(
        "--header",
        "headers",
        multiple=True,
        metavar="NAME[=VALUE]",
        help="Headers exchanges: match this header (any value without =).",
    )
    @click.option(
        "--match",
        type=click.Choice(["all", "any"]),
        default="all",
        show_default=True,
        help="Headers exchanges: every header must match, or one.",
    )
    @click.option(
        "--weight",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Hash exchanges: the binding's share of keys.",
    )
    @json_option
    def command(
        exchange_name: str,
        topic: str,
        key: str,
        headers: tuple[str, ...],
        match: Literal["all", "any"],
        weight: int,
        as_json: bool,
    ) -> None:
        wanted = _binding_headers(headers)
        spec = BindingSpec(exchange_name, topic, key, wanted, match, weight)

        async def call(client: Client) -> bool:
            method = client.bind if verb == "bind" else client.unbind
            return await method(
                exchange_name, topic, key=key, headers=wanted, match=match, weight=weight
            )

        changed = run(call)
        past = "bound" if verb == "bind" else "unbound"
        line = f"{past} {exchange_name} {render.binding_text(spec)}"
        if not changed:
            line = f"nothing to do: {exchange_name} {render.binding_text(spec)} was already {past}"
        done(as_json, {"changed": changed, "binding": spec}, line)

    command.__doc__ = (
        "Bind EXCHANGE to TOPIC: messages it routes there."
        if verb == "bind"
        else "Remove the binding of EXCHANGE to TOPIC with these options."
    )
    return click.command(verb)(command)


def _binding_headers(pairs: tuple[str, ...]) -> dict[str, bytes | None] | None:
    if not pairs:
        return None
    headers: dict[str, bytes | None] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not name:
            raise click.BadParameter(f"{pair!r} has no header name", param_hint="--header")
        headers[name] = value.encode() if equals else None
    return headers


bind = _binding_command("bind")
unbind = _binding_command("unbind")
