"""`python -m sync rules …`: the admin maps resources to rooms, stored in Azurite."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devhost.azurite import Azurite
from sync.cli import main


@pytest.fixture
def cli_env(azurite: Azurite, table_prefix: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"AzureWebJobsStorage": azurite.connection_string, "TABLE_PREFIX": table_prefix,
              "ANNY_API_TOKEN": "t", "ANNY_ORGANIZATION_ID": "org", "ANNY_WEBHOOK_SECRET": "s",
              "PUBLIC_BASE_URL": "https://sync.example.org"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, object]:
    code = main(["--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_rules_add_list_remove_round_trip(cli_env: dict, capsys: pytest.CaptureFixture[str]) -> None:
    code, added = run_json(capsys, "rules", "add", "--anny-resource", "res-1", "--room", "Room.A@Contoso.example",
                           "--time-zone", "Europe/Vienna")
    assert code == 0 and added["room"] == "room.a@contoso.example" and added["time_zone"] == "Europe/Vienna"
    run_json(capsys, "rules", "add", "--anny-resource", "res-2", "--room", "room.b@contoso.example")
    code, listed = run_json(capsys, "rules", "list")
    assert [(r["anny_resource_id"], r["room"]) for r in listed] == [
        ("res-1", "room.a@contoso.example"), ("res-2", "room.b@contoso.example")]
    code, removed = run_json(capsys, "rules", "remove", "--anny-resource", "res-1")
    assert code == 0 and removed["anny_resource_id"] == "res-1"
    assert [r["anny_resource_id"] for r in run_json(capsys, "rules", "list")[1]] == ["res-2"]


@pytest.mark.parametrize(("args", "message"), [
    (["--anny-resource", "res-1", "--room", "room.x@contoso.example"], "anny resource is mapped already"),
    (["--anny-resource", "res-9", "--room", "ROOM.A@contoso.example"], "room is mapped already"),
    (["--anny-resource", "res-9", "--room", "not-an-address"], "mailbox address"),
    (["--anny-resource", " ", "--room", "room.z@contoso.example"], "resource id is empty"),
    (["--anny-resource", "res-9", "--room", "room.z@contoso.example", "--time-zone", "Nowhere/City"],
     "unknown time zone"),
])
def test_bad_rules_are_refused_and_change_nothing(cli_env: dict, capsys: pytest.CaptureFixture[str],
                                                  args: list[str], message: str) -> None:
    run_json(capsys, "rules", "add", "--anny-resource", "res-1", "--room", "room.a@contoso.example")
    code, error = run_json(capsys, "rules", "add", *args)
    assert code == 2 and message in error["error"]
    assert len(run_json(capsys, "rules", "list")[1]) == 1


def test_removing_an_unknown_rule_is_a_clear_error(cli_env: dict, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["rules", "remove", "--anny-resource", "nope"])
    assert code == 2 and "no rule for this anny resource" in capsys.readouterr().err


def test_missing_settings_are_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("ANNY_API_TOKEN", raising=False)
    assert main(["rules", "list"]) == 2
    assert "ANNY_API_TOKEN" in capsys.readouterr().err


def test_module_entry_point_runs(cli_env: dict) -> None:
    done = subprocess.run([sys.executable, "-m", "sync", "--json", "rules", "list"], capture_output=True,
                          text=True, env={**cli_env, "PATH": ""}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
