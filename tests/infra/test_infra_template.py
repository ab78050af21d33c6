"""infra/main.bicep: the resources, their security properties, roles and secrets."""

from __future__ import annotations

import json
import re
import sys

import pytest
from bicep_template import APP_HOST, INFRA, ROOT, Template, parse_bicep

from devhost.worker_env import WORKER_PYTHON

RUNNING_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

API_VERSIONS = {
    "Microsoft.ManagedIdentity/userAssignedIdentities": "2023-01-31",
    "Microsoft.Storage/storageAccounts": "2023-05-01",
    "Microsoft.Storage/storageAccounts/blobServices": "2023-05-01",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "2023-05-01",
    "Microsoft.Authorization/roleAssignments": "2022-04-01",
    "Microsoft.OperationalInsights/workspaces": "2023-09-01",
    "Microsoft.Insights/components": "2020-02-02",
    "Microsoft.KeyVault/vaults": "2023-07-01",
    "Microsoft.KeyVault/vaults/secrets": "2023-07-01",
    "Microsoft.Web/serverfarms": "2024-04-01",
    "Microsoft.Web/sites": "2024-04-01",
    "Microsoft.Web/sites/config": "2024-04-01",
    "Microsoft.Graph/servicePrincipals": "v1.0",
    "Microsoft.Graph/appRoleAssignedTo": "v1.0",
}

# Built-in role definition id -> the resource type it must be scoped to. Nothing else, and
# nothing broader (no Owner, Contributor, Storage Account Contributor, subscription scope).
ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Microsoft.Storage/storageAccounts",  # Storage Blob Data Owner
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Microsoft.Storage/storageAccounts",  # Storage Queue Data Contributor
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Microsoft.Storage/storageAccounts",  # Storage Table Data Contributor
    "3913510d-42f4-4e42-8a64-420c390055eb": "Microsoft.Insights/components",  # Monitoring Metrics Publisher
    "4633458b-17de-408a-b874-0445c86b69e6": "Microsoft.KeyVault/vaults",  # Key Vault Secrets User
}

# Microsoft Graph application role ids (permissions reference, "Application" ids).
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_PLACE_ROLES = {"Place.Read.All": "913b9306-0ce1-42b8-9137-6a7df690a760"}
GRAPH_MAILBOX_ROLES = {
    "Calendars.ReadWrite": "ef54d2bf-783f-4e0f-bca1-3210c0444d99",
    "MailboxSettings.ReadWrite": "6931bccd-447a-43d1-b442-00a195474933",
}


@pytest.mark.parametrize("path", sorted(INFRA.glob("**/*.bicep")), ids=lambda p: p.name)
def test_every_bicep_file_parses(path):
    parsed = parse_bicep(path)
    assert parsed.get("resources"), f"{path.name} declares no resource"


def test_resource_types_and_api_versions_are_exactly_the_expected_ones(template: Template):
    found = {r["type"]: r["api_version"] for r in template.resources.values()}
    assert found == API_VERSIONS


def test_one_user_assigned_identity_and_no_system_assigned_identity(template: Template):
    symbol, _ = template.only("Microsoft.ManagedIdentity/userAssignedIdentities")
    assert symbol == "identity"
    for name in template.resources:
        kind = (template.resource(name).get("identity") or {}).get("type", "")
        assert "SystemAssigned" not in kind, name


def test_flex_consumption_plan(template: Template):
    _, plan = template.only("Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True


def test_function_app_is_linux_python_https_only_with_tls12_and_no_ftp(template: Template):
    symbol, site = template.only("Microsoft.Web/sites")
    assert symbol == "functionApp"
    assert set(site["kind"].split(",")) == {"functionapp", "linux"}
    props = site["properties"]
    assert template.dotted(props["serverFarmId"]) == "plan.id"
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    assert props["functionAppConfig"]["runtime"] == {"name": "python", "version": "pythonVersion"}


def test_python_version_parameter_defaults_to_the_version_the_tests_run_on(template: Template):
    assert template.params["pythonVersion"]["default"] == RUNNING_PYTHON
    assert RUNNING_PYTHON in template.decorators("pythonVersion")["allowed"]


def test_template_offers_only_the_python_versions_the_tests_run_on(template: Template):
    suite_python = re.search(r"^PYTHON \?= python(3\.\d+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert "make test-e2e-py313" in (ROOT / ".ci" / "run").read_text()  # CI runs the e2e tests on the worker's Python
    assert set(template.decorators("pythonVersion")["allowed"]) == {suite_python, WORKER_PYTHON}


def test_instance_memory_and_maximum_instances_are_parameters(template: Template):
    _, site = template.only("Microsoft.Web/sites")
    scale = site["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert scale == {"instanceMemoryMB": "instanceMemoryMB", "maximumInstanceCount": "maximumInstanceCount",
                     "triggers": {"http": {"perInstanceConcurrency": "httpPerInstanceConcurrency"}}}
    # Python's default of 1 would give every webhook and handshake an instance of its own
    assert template.params["httpPerInstanceConcurrency"]["default"] > 1
    assert template.decorators("instanceMemoryMB")["allowed"] == [512, 2048, 4096]
    assert template.params["instanceMemoryMB"]["default"] == 2048
    limits = template.decorators("maximumInstanceCount")
    assert 1 <= limits["min_value"] <= template.params["maximumInstanceCount"]["default"] <= limits["max_value"]
    assert limits["max_value"] <= 1000


def test_the_app_runs_as_the_user_assigned_identity_everywhere(template: Template):
    _, site = template.only("Microsoft.Web/sites")
    assert site["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {"'${identity.id}'": {}}}
    assert template.dotted(site["properties"]["keyVaultReferenceIdentity"]) == "identity.id"
    package = site["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert package["type"] == "blobContainer"
    assert package["authentication"]["type"] == "UserAssignedIdentity"
    assert template.dotted(package["authentication"]["userAssignedIdentityResourceId"]) == "identity.id"


def test_code_package_goes_to_the_deployment_container(template: Template):
    _, site = template.only("Microsoft.Web/sites")
    _, container = template.only("Microsoft.Storage/storageAccounts/blobServices/containers")
    package = site["properties"]["functionAppConfig"]["deployment"]["storage"]
    blob_endpoint = "storage.properties.primaryEndpoints.blob"
    assert package["value"] == f"${{{blob_endpoint}}}${{{container['name']}}}"
    assert container["properties"]["publicAccess"] == "None"


def test_storage_account_has_no_shared_key_no_public_blobs_and_tls12(template: Template):
    _, storage = template.only("Microsoft.Storage/storageAccounts")
    props = storage["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True


def test_key_vault_uses_rbac_soft_delete_and_a_purge_protection_parameter(template: Template):
    _, vault = template.only("Microsoft.KeyVault/vaults")
    props = vault["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert "accessPolicies" not in props
    assert template.params["enablePurgeProtection"]["type"] == "bool"
    assert template.params["enablePurgeProtection"]["default"] is True
    # The API refuses an explicit false: on -> true, off -> property left out (null).
    for enabled, expected in ((True, True), (False, None)):
        env = {"enablePurgeProtection": enabled}
        assert template.evaluate(props["enablePurgeProtection"], env) is expected


def test_application_insights_accepts_only_entra_authenticated_telemetry(template: Template):
    _, insights = template.only("Microsoft.Insights/components")
    props = {key.lower(): value for key, value in insights["properties"].items()}
    assert props["disablelocalauth"] is True
    assert template.dotted(props["workspaceresourceid"]) == "logAnalytics.id"


def _role_assignments(template: Template) -> dict[str, tuple[str, str]]:
    """symbol -> (role definition id, scope symbol)"""
    found = {}
    for symbol, body in template.of_type("Microsoft.Authorization/roleAssignments").items():
        name, args = template.function(body["properties"]["roleDefinitionId"])
        assert name == "subscription_resource_id"
        assert args["resource_type"] == "Microsoft.Authorization/roleDefinitions"
        found[symbol] = (template.evaluate(args["resource_name_1"], {}), body["scope"])
    return found


def test_role_assignments_are_exactly_the_needed_roles_on_their_resources(template: Template):
    assignments = _role_assignments(template)
    assert sorted(role for role, _ in assignments.values()) == sorted(ROLES)
    for symbol, (role, scope) in assignments.items():
        assert template.resources[scope]["type"] == ROLES[role], symbol


def test_role_assignments_go_to_the_identity_with_stable_names(template: Template):
    for symbol, body in template.of_type("Microsoft.Authorization/roleAssignments").items():
        props = body["properties"]
        assert template.dotted(props["principalId"]) == "identity.properties.principalId", symbol
        assert props["principalType"] == "ServicePrincipal", symbol
        name, args = template.function(body["name"])
        role_var = template.function(props["roleDefinitionId"])[1]["resource_name_1"]
        assert name == "guid"
        assert [template.dotted(arg) for arg in args.values()] == [f"{body['scope']}.id", "identity.id", role_var]


def test_graph_extension_is_configured(template: Template):
    assert list(template.extensions) == ["microsoftGraphV1"]
    config = json.loads((INFRA / "bicepconfig.json").read_text())
    reference = config["extensions"]["microsoftGraphV1"]
    assert re.fullmatch(r"br:[a-z.]+/bicep/extensions/microsoftgraph/v1\.0:\d+\.\d+\.\d+", reference)


def test_graph_roles_go_to_the_identity_on_the_graph_service_principal(template: Template):
    graph = template.resources["graphServicePrincipal"]
    assert graph["existing"] is True
    assert template.resource("graphServicePrincipal") == {"appId": GRAPH_APP_ID}
    assert template.condition("graphServicePrincipal") == "grantGraphAppRoles"
    symbol, assignment = template.only("Microsoft.Graph/appRoleAssignedTo")
    assert template.dotted(assignment["principalId"]) == "identity.properties.principalId"
    assert template.dotted(assignment["resourceId"]) == "graphServicePrincipal.id"
    loop = template.resources[symbol]["config"]["loop_type"]["detail"]
    assert template.dotted(assignment["appRoleId"]) == f"{loop['item_name']}.id"


@pytest.mark.parametrize(("grant", "tenant_wide", "expected"), [
    (True, True, GRAPH_PLACE_ROLES | GRAPH_MAILBOX_ROLES),
    (True, False, GRAPH_PLACE_ROLES),
    (False, True, {}),
    (False, False, {}),
])
def test_graph_roles_are_switchable(template: Template, grant, tenant_wide, expected):
    symbol, _ = template.only("Microsoft.Graph/appRoleAssignedTo")
    granted = template.evaluate(template.resources[symbol]["config"]["loop_type"]["detail"]["array_name"],
                                {"grantGraphAppRoles": grant, "grantMailboxRolesTenantWide": tenant_wide})
    assert {role["name"]: role["id"] for role in granted} == expected
    for switch in ("grantGraphAppRoles", "grantMailboxRolesTenantWide"):
        assert template.params[switch]["type"] == "bool"
        assert template.params[switch]["default"] is True


def _secret_resources(template: Template) -> dict[str, dict]:
    return template.of_type("Microsoft.KeyVault/vaults/secrets")


def test_every_secret_comes_from_a_secure_parameter(template: Template):
    secrets = _secret_resources(template)
    assert {body["properties"]["value"] for body in secrets.values()} == template.secure_params()
    for body in secrets.values():
        assert body["parent"] == "vault"


def test_secret_looking_parameters_are_secure_and_have_no_real_default(template: Template):
    looks_secret = {name for name in template.params if re.search(r"(?i)token|secret|key|password", name)}
    assert looks_secret <= template.secure_params()
    for name in template.secure_params():
        assert template.params[name]["type"] == "string"
        assert template.params[name]["default"] in (None, ""), name


def test_optional_secret_is_stored_only_when_given(template: Template):
    optional = {name for name in template.secure_params() if template.params[name]["default"] == ""}
    for symbol, body in _secret_resources(template).items():
        param = body["properties"]["value"]
        if param in optional:
            condition = template.condition(symbol)
            assert template.evaluate(condition, {param: ""}) is False
            assert template.evaluate(condition, {param: "value"}) is True


def test_no_output_carries_a_secret(template: Template):
    forbidden = template.secure_params() | set(_secret_resources(template))
    text = json.dumps(template.outputs)
    for name in template.variables:  # outputs may go through variables
        if re.search(rf"\b{name}\b", text):
            text += json.dumps(template.var(name))
    for name in forbidden:
        assert not re.search(rf"\b{re.escape(name)}\b", text), name
    assert not re.search(r"(?i)\blist[A-Za-z]*\(|secretUri|listKeys|ConnectionString", text)


def test_outputs_give_app_name_urls_and_identity_ids(template: Template):
    outputs = {name: output["value"] for name, output in template.outputs.items()}
    assert template.dotted(outputs["FUNCTION_APP_NAME"]) == "functionApp.name"
    urls = {name: template.evaluate(value, APP_HOST)
            for name, value in outputs.items() if name.endswith("_URL")}
    assert urls == {
        "PUBLIC_BASE_URL": "https://app.example",
        "ANNY_WEBHOOK_URL": "https://app.example/api/anny/webhook",
        "GRAPH_NOTIFICATION_URL": "https://app.example/api/graph/notify",
        "GRAPH_LIFECYCLE_URL": "https://app.example/api/graph/lifecycle",
        "ADMIN_API_URL": "https://app.example/api/manage",
    }
    assert template.dotted(outputs["IDENTITY_CLIENT_ID"]) == "identity.properties.clientId"
    assert template.dotted(outputs["IDENTITY_PRINCIPAL_ID"]) == "identity.properties.principalId"
    assert template.dotted(outputs["IDENTITY_RESOURCE_ID"]) == "identity.id"
