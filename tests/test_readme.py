"""The README's Python snippets run as written (in a scratch directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_the_readme_has_snippets() -> None:
    assert SNIPPETS


@pytest.mark.parametrize("snippet", SNIPPETS)
def test_snippet_runs(snippet: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, str(README), "exec"), {"__name__": "readme"})


SHELL_BLOCK = re.search(
    r"## Five minutes, from the shell.*?```sh\n(.*?)```", README.read_text(), re.DOTALL
)


def test_the_shell_quickstart_runs_against_a_real_server(tmp_path: Path) -> None:
    import shlex

    from click.testing import CliRunner

    from roost.cli.main import main
    from tests.e2e.test_serve import Server

    assert SHELL_BLOCK is not None
    commands = [line for line in SHELL_BLOCK.group(1).splitlines() if line.strip()]
    assert commands
    server = Server(tmp_path / "data")
    try:
        for line in commands:
            words = shlex.split(line)
            assert words[0].endswith("roost"), line
            result = CliRunner().invoke(main, ["--url", server.url, *words[1:]])
            assert result.exit_code == 0, f"{line}\n{result.output}"
    finally:
        server.stop()


def test_the_network_snippet_runs_against_a_real_server(tmp_path: Path) -> None:
    """The snippet names the default address; here it is the test server's."""
    import asyncio

    from tests.e2e.test_serve import Server

    [snippet] = [s for s in SNIPPETS if "roost.connect(" in s]
    server = Server(tmp_path / "data")
    try:
        namespace: dict[str, object] = {"__name__": "readme"}
        exec(compile(snippet.replace("roost://127.0.0.1:7420", server.url), str(README), "exec"),
             namespace)  # fmt: skip
        asyncio.run(namespace["talk"]())  # type: ignore[operator]

        async def published() -> int:
            import roost

            async with roost.connect(server.url, reconnect=False) as broker:
                info = await broker.describe_topic("emails")
                return info.partitions[0].end_offset

        assert asyncio.run(published()) == 1
    finally:
        server.stop()
