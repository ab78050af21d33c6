"""Settings: validated once, each failure names the setting and what it expects."""

from __future__ import annotations

import pytest

from devhost import settings_docs
from sync.errors import SettingsError
from sync.settings import Settings

VALID = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "ANNY_API_TOKEN": "token",
    "ANNY_ORGANIZATION_ID": "org-1",
    "ANNY_WEBHOOK_SECRET": "s3cret",
    "PUBLIC_BASE_URL": "https://sync.example.org",
}


def env(**changes: str | None) -> dict[str, str]:
    values = {**VALID, **changes}
    return {k: v for k, v in values.items() if v is not None}


def test_defaults_apply_when_only_required_settings_are_given() -> None:
    settings = Settings.from_env(env())
    assert settings.graph_base_url == "https://graph.microsoft.com/v1.0"
    assert settings.anny_base_url == "https://b.anny.co"
    assert settings.window_months == 6 and settings.time_zone == "Europe/Berlin"
    assert settings.storage.connection_string == "UseDevelopmentStorage=true"
    assert settings.blocking_show_as == {"free", "tentative", "busy", "oof", "workingElsewhere", "unknown"}


@pytest.mark.parametrize(("changes", "message"), [
    ({"ANNY_API_TOKEN": None}, "setting ANNY_API_TOKEN is missing; expected: anny API token"),
    ({"ANNY_ORGANIZATION_ID": "  "}, "setting ANNY_ORGANIZATION_ID is missing"),
    ({"ANNY_WEBHOOK_SECRET": None}, "setting ANNY_WEBHOOK_SECRET is missing"),
    ({"PUBLIC_BASE_URL": None}, "setting PUBLIC_BASE_URL is missing"),
    ({"PUBLIC_BASE_URL": "sync.example.org"}, "PUBLIC_BASE_URL is malformed .*absolute http"),
    ({"GRAPH_BASE_URL": "http://graph.example.org"}, "GRAPH_BASE_URL is malformed .*expected https"),
    ({"SYNC_WINDOW_MONTHS": "six"}, "SYNC_WINDOW_MONTHS is malformed .*whole number from 1 to 24"),
    ({"SYNC_WINDOW_MONTHS": "0"}, "SYNC_WINDOW_MONTHS is malformed"),
    ({"SYNC_TIME_ZONE": "Mars/Olympus"}, "SYNC_TIME_ZONE is malformed .*IANA time zone"),
    ({"BLOCKING_SHOW_AS": "busy,sometimes"}, "BLOCKING_SHOW_AS is malformed .*subset of free"),
    ({"BLOCKER_TITLE_MODE": "loud"}, "BLOCKER_TITLE_MODE is malformed .*one of subject, neutral"),
    ({"EVENT_TITLE_TEMPLATE": "{customer_email}"}, "EVENT_TITLE_TEMPLATE is malformed .*unknown: customer_email"),
    ({"EVENT_TITLE_TEMPLATE": "{service"}, "EVENT_TITLE_TEMPLATE is malformed"),
    ({"GRAPH_AUTH_MODE": "password"}, "GRAPH_AUTH_MODE is malformed .*managed_identity"),
    ({"GRAPH_AUTH_MODE": "client_secret"}, "GRAPH_TENANT_ID is missing; GRAPH_AUTH_MODE=client_secret"),
    ({"GRAPH_AUTH_MODE": "static_token", "GRAPH_STATIC_TOKEN": "x"}, "static_token is only allowed"),
    ({"SUBSCRIPTION_LIFETIME_MINUTES": "20000"}, "SUBSCRIPTION_LIFETIME_MINUTES is malformed .*60 to 10080"),
    ({"ANNY_WEBHOOK_SECRET_HEADER": "x secret"}, "ANNY_WEBHOOK_SECRET_HEADER is malformed .*header name"),
    ({"TABLE_PREFIX": "9x"}, "TABLE_PREFIX is malformed"),
    ({"AzureWebJobsStorage": None}, "AzureWebJobsStorage is missing; expected a connection string"),
    ({"ANNY_API_TOKEN": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/anny)"},
     "ANNY_API_TOKEN is an unresolved Key Vault reference"),
    ({"AzureWebJobsStorage": "garbage"}, "AzureWebJobsStorage is malformed"),
])
def test_each_bad_setting_fails_with_its_name_and_expectation(changes: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env(**changes))


def test_identity_based_storage_by_account_name() -> None:
    settings = Settings.from_env(env(AzureWebJobsStorage=None, AzureWebJobsStorage__accountName="acct",
                                     AzureWebJobsStorage__clientId="cid"))
    assert settings.storage.uses_identity
    assert settings.storage.table_service_uri == "https://acct.table.core.windows.net"
    assert settings.storage.client_id == "cid"


def test_identity_based_storage_by_service_uris() -> None:
    settings = Settings.from_env(env(
        AzureWebJobsStorage=None,
        AzureWebJobsStorage__tableServiceUri="https://acct.table.core.windows.net",
        AzureWebJobsStorage__queueServiceUri="https://acct.queue.core.windows.net"))
    assert settings.storage.queue_service_uri == "https://acct.queue.core.windows.net"


def test_static_token_is_accepted_for_a_localhost_emulator() -> None:
    settings = Settings.from_env(env(GRAPH_AUTH_MODE="static_token", GRAPH_STATIC_TOKEN="t",
                                     GRAPH_BASE_URL="http://127.0.0.1:8080/v1.0"))
    assert settings.graph_base_url == "http://127.0.0.1:8080/v1.0"


def test_redacted_settings_hide_secrets() -> None:
    shown = Settings.from_env(env()).redacted()
    assert shown["ANNY_API_TOKEN"] == "***" and "token" not in str(shown.values())
    assert shown["ANNY_ORGANIZATION_ID"] == "org-1"


def test_settings_doc_and_example_settings_are_current() -> None:
    assert settings_docs.SETTINGS_DOC.read_text() == settings_docs.render_settings_doc(), "run: make docs"
    assert settings_docs.EXAMPLE.read_text() == settings_docs.render_example()


def test_http_clients_read_proxy_variables_only_when_a_proxy_is_configured() -> None:
    from sync.settings import environment_proxy

    assert not environment_proxy({})
    assert not environment_proxy({"NO_PROXY": "localhost", "HTTPS_PROXY": ""})
    assert environment_proxy({"HTTPS_PROXY": "http://proxy.contoso.example:3128"})
    assert environment_proxy({"http_proxy": "http://proxy.contoso.example:3128"})
