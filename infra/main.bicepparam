// Parameters for infra/main.bicep, used by `az deployment group create -p infra/main.bicepparam`
// and by `azd up` (azd hands its environment values, `azd env set NAME value`, to
// readEnvironmentVariable). Secrets are never written here: they come from environment
// variables named like the app settings they end up in. Example:
//
//   export ANNY_ORGANIZATION_ID=1234
//   export ANNY_API_TOKEN='<token from anny: Organization Settings → API>'
//   export ANNY_WEBHOOK_SECRET=$(openssl rand -hex 32)
//   export GRAPH_NOTIFICATION_KEY=$(openssl rand -hex 32)
//
// Keep the values: every later deployment needs the same ones (a new value is a rotation).
using 'main.bicep'

param appName = 'annysync'
param pythonVersion = '3.11'
param instanceMemoryMB = 2048
param maximumInstanceCount = 40
param httpPerInstanceConcurrency = 16
param enablePurgeProtection = true

param annyBaseUrl = readEnvironmentVariable('ANNY_BASE_URL', 'https://b.anny.co')
param annyOrganizationId = readEnvironmentVariable('ANNY_ORGANIZATION_ID')
param annyApiToken = readEnvironmentVariable('ANNY_API_TOKEN')
param annyWebhookSecret = readEnvironmentVariable('ANNY_WEBHOOK_SECRET')
param annyWebhookSigningKey = readEnvironmentVariable('ANNY_WEBHOOK_SIGNING_KEY', '')
param graphNotificationKey = readEnvironmentVariable('GRAPH_NOTIFICATION_KEY')

// How the sync behaves; each defaults to the code's default when its variable is unset.
param syncTimeZone = readEnvironmentVariable('SYNC_TIME_ZONE', 'Europe/Berlin')
param syncWindowMonths = int(readEnvironmentVariable('SYNC_WINDOW_MONTHS', '6'))
param eventTitleTemplate = readEnvironmentVariable('EVENT_TITLE_TEMPLATE', '{service} · anny #{number}')
param annyBlockerEventTitle = readEnvironmentVariable('ANNY_BLOCKER_EVENT_TITLE', 'Blocked in anny')
param blockerTitleMode = readEnvironmentVariable('BLOCKER_TITLE_MODE', 'subject')
param blockerNeutralTitle = readEnvironmentVariable('BLOCKER_NEUTRAL_TITLE', 'Busy in Outlook')
param blockingShowAs = readEnvironmentVariable('BLOCKING_SHOW_AS', 'free,tentative,busy,oof,workingElsewhere,unknown')

// false: Microsoft Graph roles are granted by script instead (docs/admin-guide.md).
param grantGraphAppRoles = true
// false once Exchange RBAC for Applications scopes the mailbox roles to the rooms (docs/admin-guide.md).
param grantMailboxRolesTenantWide = true
