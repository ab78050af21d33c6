// anny ⇄ Microsoft 365 room calendar sync — everything one tenant needs, in one resource group.
//
//   az deployment group create -g <resource group> -f infra/main.bicep -p infra/main.bicepparam
//   azd up
//
// One user-assigned managed identity does everything: host storage, the app's tables and
// queues, Key Vault references, Application Insights (Entra auth) and Microsoft Graph.
// Secrets arrive only as @secure() parameters, are stored in Key Vault and reach the app as
// Key Vault references; no output carries a secret. The admin guide is docs/admin-guide.md.
//
// Kept plain on purpose (no registry modules, no lambdas, no user-defined types) so that the
// tests in tests/infra can parse it without a Bicep compiler.

targetScope = 'resourceGroup'

// Microsoft Graph Bicep extension (alias defined in bicepconfig.json); needs Bicep 0.36.1 or later.
extension microsoftGraphV1

// ---------------------------------------------------------------- parameters: naming, hosting

@description('Short name used in every resource name (2-12 lowercase letters, digits or hyphens).')
@minLength(2)
@maxLength(12)
param appName string = 'annysync'

@description('Region of all resources; it must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Tags for every resource.')
param tags object = {}

@description('Python version of the function app. Offered: the versions the tests run on (3.11 the whole suite, 3.13 the end-to-end tests and the Functions worker\'s indexing).')
@allowed([
  '3.11'
  '3.13'
])
param pythonVersion string = '3.11'

@description('Memory per instance in MB (Flex Consumption).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper limit of instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('HTTP invocations one instance serves at once. Flex Consumption defaults to 1 for Python, which gives every webhook, notification and Graph validation handshake an instance of its own (a long admin command holds one the whole time); the app\'s HTTP handlers are async and light.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

@description('Days Log Analytics keeps telemetry.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

// ---------------------------------------------------------------- parameters: how the sync behaves
// Defaults are the code's (sync/settings.py); the app validates every value at start.

@description('IANA time zone that defines "today" for the sync window and the nightly run (e.g. Europe/Berlin, America/New_York).')
@minLength(1)
param syncTimeZone string = 'Europe/Berlin'

@description('Length of the sync window in calendar months from the start of today (1-24). Keep it within the rooms\' booking window (BookingWindowInDays, 180 days by default).')
@minValue(1)
@maxValue(24)
param syncWindowMonths int = 6

@description('Title of mirror events in Outlook; placeholders {service}, {number}, {resource}, {status}. Avoid customer data: room calendars are widely readable.')
@minLength(1)
param eventTitleTemplate string = '{service} · anny #{number}'

@description('Title of mirror events for blockers a person made in anny.')
@minLength(1)
param annyBlockerEventTitle string = 'Blocked in anny'

@description('Titles of mirror blockers in anny: subject (the Outlook subject; private events always neutral) or neutral (all neutral).')
@allowed([
  'subject'
  'neutral'
])
param blockerTitleMode string = 'subject'

@description('Neutral title of mirror blockers in anny (private/confidential events, or all with blockerTitleMode neutral).')
@minLength(1)
param blockerNeutralTitle string = 'Busy in Outlook'

@description('Comma-separated Outlook showAs values whose events block the room in anny (free, tentative, busy, oof, workingElsewhere, unknown).')
@minLength(1)
param blockingShowAs string = 'free,tentative,busy,oof,workingElsewhere,unknown'

// ---------------------------------------------------------------- parameters: Key Vault

@description('Purge protection on the Key Vault: deleted secrets and the vault itself stay recoverable for the retention period and cannot be purged early.')
param enablePurgeProtection bool = true

@description('Days a deleted Key Vault (and deleted secrets) can be recovered.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

// ---------------------------------------------------------------- parameters: anny

@description('anny API host: https://b.anny.co, or https://b.anny.eu for the EU cloud.')
param annyBaseUrl string = 'https://b.anny.co'

@description('anny organisation id (sent as o= on every anny request).')
@minLength(1)
param annyOrganizationId string

@secure()
@description('anny API token (Organization Settings → API). Stored in Key Vault as anny-api-token.')
@minLength(1)
param annyApiToken string

@secure()
@description('Shared secret anny sends in the webhook\'s custom header. Stored in Key Vault as anny-webhook-secret.')
@minLength(32)
param annyWebhookSecret string

@secure()
@description('Optional: the signing key anny shows for the webhook; when set, the app also requires the HMAC signature. Stored in Key Vault as anny-webhook-signing-key.')
param annyWebhookSigningKey string = ''

// ---------------------------------------------------------------- parameters: Microsoft Graph

@secure()
@description('Value of the host function key "graph-notify" that rides on Graph notification URLs as ?code=. Chosen by the admin (e.g. openssl rand -hex 32); registered with the app after the code is deployed (docs/admin-guide.md). Stored in Key Vault as graph-notification-key.')
@minLength(32)
param graphNotificationKey string

@description('Grant the Microsoft Graph application roles to the managed identity in this deployment (the deployer needs Privileged Role Administrator). false: the tenant grants them by script.')
param grantGraphAppRoles bool = true

@description('With grantGraphAppRoles: also grant Calendars.ReadWrite and MailboxSettings.ReadWrite tenant-wide. false when Exchange RBAC for Applications scopes them to the room mailboxes (docs/admin-guide.md); Place.Read.All is then still granted.')
param grantMailboxRolesTenantWide bool = true

// ---------------------------------------------------------------- names and constants

var token = uniqueString(subscription().id, resourceGroup().id, appName)
var identityName = 'id-${appName}-${token}'
var storageAccountName = take('st${replace(toLower(appName), '-', '')}${token}', 24)
var deploymentContainerName = 'app-package'
var logAnalyticsName = 'log-${appName}-${token}'
var appInsightsName = 'appi-${appName}-${token}'
var keyVaultName = take('kv-${appName}-${token}', 24)
var planName = 'plan-${appName}-${token}'
var functionAppName = 'func-${appName}-${token}'
var baseUrl = 'https://${functionApp.properties.defaultHostName}'

// Built-in Azure role definition ids.
var roleStorageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var roleStorageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var roleStorageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var roleMonitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var roleKeyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

// Microsoft Graph (appId 00000003-0000-0000-c000-000000000000) application role ids, as listed
// in the Microsoft Graph permissions reference ("Application" permission ids).
var graphPlaceRoles = [
  {
    name: 'Place.Read.All'
    id: '913b9306-0ce1-42b8-9137-6a7df690a760'
  }
]
var graphMailboxRoles = [
  {
    name: 'Calendars.ReadWrite'
    id: 'ef54d2bf-783f-4e0f-bca1-3210c0444d99'
  }
  {
    name: 'MailboxSettings.ReadWrite'
    id: '6931bccd-447a-43d1-b442-00a195474933'
  }
]
var graphAppRolesToGrant = grantGraphAppRoles ? (grantMailboxRolesTenantWide ? concat(graphPlaceRoles, graphMailboxRoles) : graphPlaceRoles) : []

// ---------------------------------------------------------------- identity

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

// ---------------------------------------------------------------- storage (host, tables, queues, deployment package)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
  }
}

resource blobServices 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Flex Consumption runs the code from a package in this container.
resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobServices
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource storageBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roleStorageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource storageQueueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roleStorageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageQueueDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource storageTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roleStorageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageTableDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------- monitoring (Entra-only ingestion)

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

resource monitoringMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roleMonitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleMonitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------- Key Vault and the secrets

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // Purge protection cannot be switched off once on, and the API refuses an explicit false.
    enablePurgeProtection: enablePurgeProtection ? true : null
    publicNetworkAccess: 'Enabled'
  }
}

resource annyApiTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'anny-api-token'
  properties: {
    value: annyApiToken
  }
}

resource annyWebhookSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'anny-webhook-secret'
  properties: {
    value: annyWebhookSecret
  }
}

resource graphNotificationKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'graph-notification-key'
  properties: {
    value: graphNotificationKey
  }
}

resource annyWebhookSigningKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(annyWebhookSigningKey)) {
  parent: vault
  name: 'anny-webhook-signing-key'
  properties: {
    value: annyWebhookSigningKey
  }
}

resource keyVaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, roleKeyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleKeyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------- Flex Consumption plan and function app

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  // azd deploys the service "sync" of azure.yaml to the site carrying this tag.
  tags: union(tags, {
    'azd-service-name': 'sync'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
  dependsOn: [
    deploymentContainer
  ]
}

// The app settings live in their own resource so that they can use the app's host name.
// Names are the ones sync/settings.py declares (tests/infra cross-checks them); settings with
// a usable code default are left out. Key Vault references have no version: the app follows
// the latest secret version.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: {
    // Functions host storage, reached with the identity (no connection string, no keys).
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identity.properties.clientId
    AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
    AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
    AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
    // Application Insights with Entra ID authentication (local auth is disabled).
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
    // anny
    ANNY_BASE_URL: annyBaseUrl
    ANNY_ORGANIZATION_ID: annyOrganizationId
    ANNY_API_TOKEN: '@Microsoft.KeyVault(SecretUri=${annyApiTokenSecret.properties.secretUri})'
    ANNY_WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${annyWebhookSecretSecret.properties.secretUri})'
    ANNY_WEBHOOK_SIGNING_KEY: empty(annyWebhookSigningKey) ? '' : '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/anny-webhook-signing-key)'
    // Microsoft Graph, as the managed identity
    GRAPH_AUTH_MODE: 'managed_identity'
    GRAPH_CLIENT_ID: identity.properties.clientId
    GRAPH_NOTIFICATION_KEY: '@Microsoft.KeyVault(SecretUri=${graphNotificationKeySecret.properties.secretUri})'
    PUBLIC_BASE_URL: baseUrl
    // how the sync behaves (template parameters, so a redeployment keeps them)
    SYNC_TIME_ZONE: syncTimeZone
    SYNC_WINDOW_MONTHS: string(syncWindowMonths)
    EVENT_TITLE_TEMPLATE: eventTitleTemplate
    ANNY_BLOCKER_EVENT_TITLE: annyBlockerEventTitle
    BLOCKER_TITLE_MODE: blockerTitleMode
    BLOCKER_NEUTRAL_TITLE: blockerNeutralTitle
    BLOCKING_SHOW_AS: blockingShowAs
  }
  dependsOn: [
    annyWebhookSigningKeySecret
    storageBlobDataOwner
    storageQueueDataContributor
    storageTableDataContributor
    monitoringMetricsPublisher
    keyVaultSecretsUser
  ]
}

// ---------------------------------------------------------------- Microsoft Graph application roles

// Read only when roles are granted, so a deployment with grantGraphAppRoles = false needs no Graph access.
resource graphServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' existing = if (grantGraphAppRoles) {
  appId: '00000003-0000-0000-c000-000000000000'
}

resource graphAppRoleAssignments 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for role in graphAppRolesToGrant: {
  appRoleId: role.id
  principalId: identity.properties.principalId
  resourceId: graphServicePrincipal.id
}]

// ---------------------------------------------------------------- outputs (no secrets)

output FUNCTION_APP_NAME string = functionApp.name
output PUBLIC_BASE_URL string = baseUrl
@description('anny webhook URL; append ?code=<function key> (docs/admin-guide.md).')
output ANNY_WEBHOOK_URL string = '${baseUrl}/api/anny/webhook'
output GRAPH_NOTIFICATION_URL string = '${baseUrl}/api/graph/notify'
output GRAPH_LIFECYCLE_URL string = '${baseUrl}/api/graph/lifecycle'
output ADMIN_API_URL string = '${baseUrl}/api/manage'
output IDENTITY_CLIENT_ID string = identity.properties.clientId
output IDENTITY_PRINCIPAL_ID string = identity.properties.principalId
output IDENTITY_RESOURCE_ID string = identity.id
output KEY_VAULT_NAME string = vault.name
output STORAGE_ACCOUNT_NAME string = storage.name
output GRAPH_APP_ROLES_GRANTED array = [for role in graphAppRolesToGrant: role.name]
