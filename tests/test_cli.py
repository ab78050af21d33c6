"""`python -m sync`: options anywhere on the line, help with an example for every command, exit codes,
and bad input refused before anything is asked of anny or Graph."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sync.cli import _parser, main


@pytest.fixture
def cli_env(azurite, table_prefix: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:  # type: ignore[no-untyped-def]
    values = {"AzureWebJobsStorage": azurite.connection_string, "TABLE_PREFIX": table_prefix,
              "ANNY_API_TOKEN": "t", "ANNY_ORGANIZATION_ID": "org", "ANNY_WEBHOOK_SECRET": "s",
              "PUBLIC_BASE_URL": "https://sync.example.org"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SYNC_ADMIN_API", raising=False)
    return values


@pytest.mark.parametrize(("args", "message"), [
    (["--anny-resource", "res-9", "--room", "not-an-address"], "mailbox address"),
    (["--anny-resource", " ", "--room", "room.z@contoso.example"], "resource id is empty"),
    (["--anny-resource", "res-9", "--room", "room.z@contoso.example", "--time-zone", "Nowhere/City"],
     "unknown time zone"),
])
def test_malformed_rules_are_refused_before_asking_anyone(cli_env: dict, capsys: pytest.CaptureFixture[str],
                                                          args: list[str], message: str) -> None:
    code = main(["rules", "add", *args, "--json"])
    assert code == 2 and message in json.loads(capsys.readouterr().out)["error"]
    assert main(["rules", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_json_is_accepted_before_or_after_the_subcommand(cli_env: dict, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--json", "rules", "list"], ["rules", "--json", "list"], ["rules", "list", "--json"]):
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out) == []
    assert main(["rules", "list"]) == 0
    assert capsys.readouterr().out.strip() == "(none)"


def test_every_command_has_a_help_text_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [["rooms"], ["resources"], ["rules"], ["rules", "add"], ["rules", "list"], ["rules", "remove"],
                ["activate"], ["deactivate"], ["resync"], ["delete"], ["status"]]
    for command in commands:
        with pytest.raises(SystemExit) as done:
            main([*command, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "example:\n  python -m sync " + command[0] in text, command
        assert "exit codes:" in text
    assert "example" in _parser().format_help() or "typical first run" in _parser().format_help()


def test_removing_an_unknown_rule_is_a_clear_error(cli_env: dict, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["rules", "remove", "--anny-resource", "nope"])
    assert code == 2 and "no rule for this anny resource" in capsys.readouterr().err


def test_missing_settings_are_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("ANNY_API_TOKEN", raising=False)
    monkeypatch.delenv("SYNC_ADMIN_API", raising=False)
    assert main(["rules", "list"]) == 2
    assert "ANNY_API_TOKEN" in capsys.readouterr().err


def test_unreachable_admin_api_is_a_failure_not_a_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--api", "http://127.0.0.1:9/api/manage", "--key", "k"]) == 3
    assert "unreachable" in capsys.readouterr().err


def test_module_entry_point_runs(cli_env: dict) -> None:
    done = subprocess.run([sys.executable, "-m", "sync", "rules", "list", "--json"], capture_output=True,
                          text=True, env={**cli_env, "PATH": ""}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_status_of_a_fresh_install_says_what_to_do_first(cli_env: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("state          inactive\n") and "last sweep     never" in text
    assert "(none: map a room with `python -m sync rules add`)" in text and "None" not in text


def test_status_shows_an_initial_sync_as_progress_bars_and_text() -> None:
    from datetime import UTC, datetime, timedelta

    from sync.cli import progress_bars
    from sync.status import _progress_lines

    started = (datetime.now(UTC) - timedelta(seconds=60)).isoformat()
    sync = {"in_progress": True, "eta_s": 120, "to_outlook": {"done": 300, "to_do": 0, "total": 300},
            "to_anny": {"done": 100, "to_do": 200, "total": 300},
            "rooms": [{"room": "room-a@contoso.example", "started_at": started,
                       "to_outlook": {"done": 300, "to_do": 0, "total": 300, "eta_s": 0},
                       "to_anny": {"done": 100, "to_do": 200, "total": 300, "eta_s": 120}}]}
    outlook_bar, anny_bar = progress_bars(sync)
    assert outlook_bar.startswith("room-a@contoso.example anny → Outlook: 100%") and "300/300" in outlook_bar
    assert "Outlook → anny:  33%" in anny_bar and "100/300" in anny_bar and "█" in anny_bar
    assert "<02:00" in anny_bar  # tqdm's estimate from the rate so far: 200 left at 100 a minute
    text = _progress_lines(sync)
    assert text[0] == "initial sync   anny → Outlook 300/300, Outlook → anny 100/300; about 2 min left"
    assert progress_bars({"in_progress": False, "rooms": []}) == [] and _progress_lines({"in_progress": False}) == []
