"""The deployment against the code: app settings, parameter file, azd project and admin guide.

`sync/settings.py` is the one source of truth for the settings the code reads; the template,
`local.settings.example.json`, `infra/main.bicepparam` and the admin guide (docs/admin-guide.md) are checked against it.
"""

from __future__ import annotations

import json
import re

import pytest
from bicep_template import APP_HOST, INFRA, ROOT, Template

from sync.errors import SettingsError
from sync.settings import (
    BLOCKER_TITLE_MODES,
    GRAPH_AUTH_MODES,
    STORAGE_SETTINGS,
    Settings,
    all_setting_names,
    declared_settings,
)

# Read by the Functions host and its Application Insights logger, not by our code.
PLATFORM_SETTINGS = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"}
# Settings Flex Consumption rejects or ignores (the runtime is in functionAppConfig), and the
# shared-key connection string the storage account does not allow.
NOT_ON_FLEX = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
               "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_NODE_DEFAULT_VERSION",
               "AzureWebJobsStorage"}
KEY_VAULT_REFERENCE = re.compile(r"@Microsoft\.KeyVault\(SecretUri=\$\{(?:(\w+)\.properties\.secretUri"
                                 r"|vault\.properties\.vaultUri\}secrets/([\w-]+))\}?\)")

# What the platform fills in for the template's expressions, for evaluating it here.
RUNTIME = {
    "identity.properties.clientId": "11111111-2222-3333-4444-555555555555",
    "storage.properties.primaryEndpoints.blob": "https://stexample.blob.core.windows.net/",
    "storage.properties.primaryEndpoints.queue": "https://stexample.queue.core.windows.net/",
    "storage.properties.primaryEndpoints.table": "https://stexample.table.core.windows.net/",
    "appInsights.properties.ConnectionString": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
    "functionApp.properties.defaultHostName": "func-annysync-example.azurewebsites.net",
    "annyBaseUrl": "https://b.anny.co",
    "annyOrganizationId": "org-1",
    "annyWebhookSigningKey": "",
}


def _code_settings() -> set[str]:
    return set(all_setting_names())


def _secret_settings() -> set[str]:
    return {spec.env for spec in declared_settings() if spec.secret}


def _parameter_defaults(template: Template) -> dict[str, str | int | bool]:
    return {name: param["default"] for name, param in template.params.items()
            if isinstance(param.get("default"), str | int | bool)}


def _deployed_environment(template: Template, **overrides: str | int) -> dict[str, str]:
    """The app settings as the running app sees them, Key Vault references resolved."""
    vault = "https://kv-example.vault.azure.net/"
    secrets = {body["name"]: f"secret-{body['name']}-value"
               for body in template.of_type("Microsoft.KeyVault/vaults/secrets").values()}
    runtime = _parameter_defaults(template) | RUNTIME | {"vault.properties.vaultUri": vault} | {
        f"{symbol}.properties.secretUri": f"{vault}secrets/{body['name']}"
        for symbol, body in template.of_type("Microsoft.KeyVault/vaults/secrets").items()}
    env = {}
    for name, value in template.app_settings().items():
        value = template.evaluate(value, runtime | overrides)
        reference = re.fullmatch(rf"@Microsoft\.KeyVault\(SecretUri={re.escape(vault)}secrets/([\w-]+)\)", value)
        env[name] = secrets[reference.group(1)] if reference else value
    return env


def test_template_sets_only_settings_the_code_or_the_platform_reads(template: Template):
    assert set(template.app_settings()) - (_code_settings() | PLATFORM_SETTINGS) == set()


def test_template_sets_every_required_setting(template: Template):
    required = {spec.env for spec in declared_settings() if spec.required}
    assert required - set(template.app_settings()) == set()


def test_settings_left_out_of_the_template_have_code_defaults(template: Template):
    left_out = [spec for spec in declared_settings() if spec.env not in template.app_settings()]
    assert all(spec.default is not None for spec in left_out)


def test_template_sets_no_setting_flex_consumption_rejects(template: Template):
    assert set(template.app_settings()) & NOT_ON_FLEX == set()


def test_host_storage_and_telemetry_use_the_identity(template: Template):
    settings = template.app_settings()
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert template.dotted(settings["AzureWebJobsStorage__clientId"]) == "identity.properties.clientId"
    for service in ("blob", "queue", "table"):
        uri = template.dotted(settings[f"AzureWebJobsStorage__{service}ServiceUri"])
        assert uri == f"storage.properties.primaryEndpoints.{service}"
    storage_settings = {name for name in settings if name.startswith("AzureWebJobsStorage")}
    assert storage_settings <= set(STORAGE_SETTINGS)
    assert template.dotted(settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]) == \
        "appInsights.properties.ConnectionString"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == \
        "ClientId=${identity.properties.clientId};Authorization=AAD"


def test_template_sets_what_the_deployment_determines(template: Template):
    settings = template.app_settings()
    assert settings["GRAPH_AUTH_MODE"] == "managed_identity"
    assert settings["GRAPH_AUTH_MODE"] in GRAPH_AUTH_MODES
    assert template.dotted(settings["GRAPH_CLIENT_ID"]) == "identity.properties.clientId"
    assert template.evaluate(settings["PUBLIC_BASE_URL"], APP_HOST) == "https://app.example"
    assert settings["ANNY_ORGANIZATION_ID"] == "annyOrganizationId"
    assert "GRAPH_NOTIFICATION_KEY" in settings


def test_secret_settings_are_key_vault_references_to_template_secrets(template: Template):
    settings = template.app_settings()
    secrets = template.of_type("Microsoft.KeyVault/vaults/secrets")
    secret_names = {body["name"] for body in secrets.values()}
    for name in _secret_settings() & set(settings):
        for value in template.branches(settings[name]):
            if value == "":  # an optional secret that was not given
                continue
            match = KEY_VAULT_REFERENCE.fullmatch(value)
            assert match, f"{name} is not a Key Vault reference: {value!r}"
            symbol, secret_name = match.groups()
            assert symbol in secrets or secret_name in secret_names, name


def test_no_setting_holds_a_secure_parameter_directly(template: Template):
    secure = template.secure_params()
    for name, value in template.app_settings().items():
        for branch in template.branches(value):
            text = json.dumps(branch)
            assert not any(re.search(rf"\b{param}\b", text) for param in secure), name


@pytest.mark.parametrize("signing_key", ["", "a-signing-key"])
def test_the_deployed_settings_pass_the_apps_own_validation(template: Template, signing_key):
    env = _deployed_environment(template, annyWebhookSigningKey=signing_key)
    settings = Settings.from_env(env)
    assert settings.graph_auth_mode == "managed_identity"
    assert settings.public_base_url == "https://func-annysync-example.azurewebsites.net"
    assert settings.storage.uses_identity
    assert settings.storage.client_id == RUNTIME["identity.properties.clientId"]
    assert settings.anny_api_token == "secret-anny-api-token-value"
    assert settings.graph_notification_key == "secret-graph-notification-key-value"
    assert settings.anny_webhook_signing_key == ("secret-anny-webhook-signing-key-value" if signing_key else "")


# Settings a tenant chooses: template parameters (a deployment rewrites all app settings, so a
# value set by hand in the portal would be lost at the next one).
TENANT_PARAMETERS = {
    "syncTimeZone": "SYNC_TIME_ZONE",
    "syncWindowMonths": "SYNC_WINDOW_MONTHS",
    "eventTitleTemplate": "EVENT_TITLE_TEMPLATE",
    "annyBlockerEventTitle": "ANNY_BLOCKER_EVENT_TITLE",
    "blockerTitleMode": "BLOCKER_TITLE_MODE",
    "blockerNeutralTitle": "BLOCKER_NEUTRAL_TITLE",
    "blockingShowAs": "BLOCKING_SHOW_AS",
}


@pytest.mark.parametrize(("parameter", "setting"), TENANT_PARAMETERS.items())
def test_tenant_setting_is_a_described_parameter_with_the_codes_default(template: Template, parameter, setting):
    spec = next(spec for spec in declared_settings() if spec.env == setting)
    assert template.decorators(parameter)["description"]
    assert str(template.params[parameter]["default"]) == spec.default
    assert _deployed_environment(template)[setting] == spec.default


@pytest.mark.parametrize(("parameter", "setting"), TENANT_PARAMETERS.items())
def test_parameter_file_reads_tenant_setting_from_its_variable_with_the_codes_default(parameter, setting):
    spec = next(spec for spec in declared_settings() if spec.env == setting)
    _, params = _bicepparam()
    read = f"readEnvironmentVariable('{setting}', '{spec.default}')"
    assert params[parameter] in (read, f"int({read})")


def test_tenant_choices_reach_the_app(template: Template):
    env = _deployed_environment(template, syncTimeZone="America/New_York", syncWindowMonths=3,
                                eventTitleTemplate="anny {number}", annyBlockerEventTitle="Closed",
                                blockerTitleMode="neutral", blockerNeutralTitle="Occupied", blockingShowAs="busy,oof")
    settings = Settings.from_env(env)
    assert (settings.time_zone, settings.window_months) == ("America/New_York", 3)
    assert (settings.event_title_template, settings.anny_blocker_event_title) == ("anny {number}", "Closed")
    assert (settings.blocker_title_mode, settings.blocker_neutral_title) == ("neutral", "Occupied")
    assert settings.blocking_show_as == frozenset({"busy", "oof"})


def test_template_validation_matches_the_codes(template: Template):
    assert template.decorators("blockerTitleMode")["allowed"] == list(BLOCKER_TITLE_MODES)
    window = template.decorators("syncWindowMonths")
    base = _deployed_environment(template)
    for months in (window["min_value"], window["max_value"]):
        assert Settings.from_env(base | {"SYNC_WINDOW_MONTHS": str(months)}).window_months == months
    for months in (window["min_value"] - 1, window["max_value"] + 1):
        with pytest.raises(SettingsError, match="SYNC_WINDOW_MONTHS"):
            Settings.from_env(base | {"SYNC_WINDOW_MONTHS": str(months)})


def test_local_settings_example_names_every_setting_of_the_code_and_the_template(template: Template):
    path = ROOT / "local.settings.example.json"
    assert path.exists(), "local.settings.example.json is missing at the repository root"
    example = json.loads(path.read_text())
    named = set(example["Values"]) | set(example.get("_meanings", {}))
    assert _code_settings() - named == set()
    assert set(template.app_settings()) - PLATFORM_SETTINGS - named == set()


# --- function_app.py -------------------------------------------------------------------------

def _app_functions() -> list:
    import function_app
    from devhost.host import indexed_functions  # the one cache: get_functions() refuses a second call

    return indexed_functions(function_app.app)


def _http_triggers() -> dict[str, object]:
    triggers = (fn.get_trigger() for fn in _app_functions())
    return {f"/api/{t.route}": t for t in triggers if getattr(t, "route", None)}


def test_url_outputs_point_at_the_apps_http_routes(template: Template):
    routes = _http_triggers()
    for name in ("ANNY_WEBHOOK_URL", "GRAPH_NOTIFICATION_URL", "GRAPH_LIFECYCLE_URL"):
        path = template.evaluate(template.outputs[name]["value"], APP_HOST).removeprefix("https://app.example")
        assert path in routes, name
        # the guide tells the admin to append ?code=<function key>
        assert str(routes[path].auth_level).endswith("FUNCTION"), name
    admin = template.evaluate(template.outputs["ADMIN_API_URL"]["value"], APP_HOST).removeprefix("https://app.example")
    admin_routes = [path for path in routes if path.startswith(f"{admin}/")]
    assert admin_routes, "the admin API output must point at the app's admin routes"
    assert all(str(routes[path].auth_level).endswith("ADMIN") for path in admin_routes)


def test_every_storage_connection_of_the_app_is_identity_based_in_the_template(template: Template):
    connections = {binding.connection for fn in _app_functions()
                   for binding in fn.get_bindings() if getattr(binding, "connection", None)}
    assert connections
    settings = template.app_settings()
    for connection in connections:
        assert settings[f"{connection}__credential"] == "managedidentity"
        assert f"{connection}__clientId" in settings
        assert connection not in settings  # no connection string


# --- infra/main.bicepparam -----------------------------------------------------------------

def _bicepparam() -> tuple[str, dict[str, str]]:
    text = (INFRA / "main.bicepparam").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    return code, dict(re.findall(r"^param\s+(\w+)\s*=\s*(.+?)\s*$", code, flags=re.MULTILINE))


def test_parameter_file_uses_the_template_and_gives_every_required_parameter(template: Template):
    code, params = _bicepparam()
    assert re.search(r"^using\s+'main\.bicep'\s*$", code, flags=re.MULTILINE)
    assert set(params) <= set(template.params)
    required = {name for name, param in template.params.items() if param["default"] is None}
    assert required <= set(params)


def test_parameter_file_reads_secrets_from_environment_variables_named_like_the_settings(template: Template):
    _, params = _bicepparam()
    for name in template.secure_params() & set(params):
        assert re.fullmatch(r"readEnvironmentVariable\('\w+'(, '')?\)", params[name]), name
    variables = set(re.findall(r"readEnvironmentVariable\('(\w+)'", "\n".join(params.values())))
    assert variables
    assert variables <= _code_settings()


def test_parameter_file_python_version_matches_the_template(template: Template):
    _, params = _bicepparam()
    assert params["pythonVersion"] == f"'{template.params['pythonVersion']['default']}'"


# --- azure.yaml ------------------------------------------------------------------------------

def test_azd_project_deploys_the_python_function_app_with_this_template(template: Template):
    text = (ROOT / "azure.yaml").read_text()
    assert re.search(r"^infra:\n  provider: bicep\n  path: infra\n  module: main$", text, flags=re.MULTILINE)
    service = re.search(r"^services:\n  (\w+):\n    project: \.\n    language: python\n    host: function$",
                        text, flags=re.MULTILINE)
    assert service
    tags = template.resource("functionApp")["tags"]
    name, args = template.function(tags)
    assert name == "union"
    assert args["arg_2"] == {"'azd-service-name'": service.group(1)}


def test_azd_hook_registers_the_graph_notification_key(template: Template):
    text = (ROOT / "azure.yaml").read_text()
    hooks = text[text.index("\nhooks:"):]
    for shell in ("posix", "windows"):
        run = re.search(rf"^    {shell}:\n(?:      .*\n)*?      run: >-\n((?:        .*(?:\n|$))+)", hooks, re.M)
        assert run, shell
        command = " ".join(run.group(1).split())
        assert "az functionapp keys set" in command
        assert "--key-type functionKeys --key-name graph-notify" in command
        for variable in ("AZURE_RESOURCE_GROUP", "FUNCTION_APP_NAME", "GRAPH_NOTIFICATION_KEY"):
            assert variable in command, (shell, variable)
    assert "FUNCTION_APP_NAME" in template.outputs


# --- the admin guide (docs/admin-guide.md) ------------------------------------------------------

def _admin_guide() -> str:
    return (ROOT / "docs" / "admin-guide.md").read_text()


def test_admin_guide_names_every_input_the_deployment_reads():
    guide = _admin_guide()
    _, params = _bicepparam()
    for variable in re.findall(r"readEnvironmentVariable\('(\w+)'", "\n".join(params.values())):
        assert variable in guide, variable
    for parameter in ("grantGraphAppRoles", "grantMailboxRolesTenantWide", "enablePurgeProtection"):
        assert parameter in guide, parameter


def test_admin_guide_covers_graph_permissions_and_exchange_rbac():
    guide = _admin_guide()
    for needle in ("Calendars.ReadWrite", "Place.Read.All", "MailboxSettings.ReadWrite",
                   "New-ServicePrincipal", "New-ManagementScope", "New-ManagementRoleAssignment",
                   "Application Calendars.ReadWrite", "Application MailboxSettings.ReadWrite",
                   "-CustomResourceScope", "Test-ServicePrincipalAuthorization", "graph-notify"):
        assert needle in guide, needle
