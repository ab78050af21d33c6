"""The app's settings: one typed object, read from the environment and validated once.

In Azure the values are app settings (secrets as Key Vault references); locally they come
from `local.settings.json`. Every setting is declared exactly once, as a field of
`Settings` whose metadata carries its environment name, meaning and default; the README
table, `local.settings.example.json` and the Bicep template are checked against it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sync.errors import SettingsError

if TYPE_CHECKING:
    from sync.budget import Limits

SHOW_AS_VALUES = ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown")
GRAPH_AUTH_MODES = ("managed_identity", "client_secret", "certificate", "static_token")
BLOCKER_TITLE_MODES = ("subject", "neutral")
MAX_SUBSCRIPTION_MINUTES = 10_080


# --- parsers: each returns the parsed value or raises ValueError saying what it expects ---


def _text(raw: str) -> str:
    return raw


def _non_empty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("expected a non-empty value")
    return raw.strip()


def _url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an absolute http(s) URL, e.g. https://example.org")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("expected https (plain http is only allowed for localhost emulators)")
    return raw.strip().rstrip("/")


def _optional_url(raw: str) -> str:
    return _url(raw) if raw.strip() else ""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value

    return parse


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _time_zone(raw: str) -> str:
    try:
        ZoneInfo(raw.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("expected an IANA time zone name, e.g. Europe/Berlin") from None
    return raw.strip()


def _show_as_set(raw: str) -> frozenset[str]:
    values = frozenset(v.strip() for v in raw.split(",") if v.strip())
    unknown = sorted(values - set(SHOW_AS_VALUES))
    if unknown or not values:
        raise ValueError(f"expected a comma-separated subset of {', '.join(SHOW_AS_VALUES)}")
    return values


def _title_template(raw: str) -> str:
    from sync.titles import check_template  # local: titles imports nothing heavy

    check_template(raw)
    return raw


def _header_name(raw: str) -> str:
    value = raw.strip().lower()
    if not value or any(not (c.isalnum() or c in "-_") for c in value):
        raise ValueError("expected an HTTP header name (letters, digits, '-' and '_')")
    return value


def _table_prefix(raw: str) -> str:
    value = raw.strip()
    if not (value.isalnum() and value[:1].isalpha() and 1 <= len(value) <= 40):
        raise ValueError("expected 1-40 letters and digits, starting with a letter")
    return value


def setting(env: str, doc: str, parse: Callable[[str], Any], default: str | None = None,
            secret: bool = False) -> Any:
    """Declare a setting: its environment name, meaning, parser and default (None: required)."""
    meta = {"env": env, "doc": doc, "parse": parse, "default": default, "secret": secret}
    return field(metadata=meta)


@dataclass(frozen=True)
class StorageSettings:
    """Where the app's tables and queues live (the Functions host's own storage)."""

    connection_string: str = ""
    table_service_uri: str = ""
    queue_service_uri: str = ""
    client_id: str = ""

    @property
    def uses_identity(self) -> bool:
        return not self.connection_string


STORAGE_SETTINGS: dict[str, str] = {
    "AzureWebJobsStorage": "Storage connection string (`UseDevelopmentStorage=true` for Azurite). "
    "Either this or the identity-based settings below.",
    "AzureWebJobsStorage__accountName": "Identity-based storage: the account name "
    "(table and queue endpoints derived from it).",
    "AzureWebJobsStorage__tableServiceUri": "Identity-based storage: the table endpoint.",
    "AzureWebJobsStorage__queueServiceUri": "Identity-based storage: the queue endpoint.",
    "AzureWebJobsStorage__blobServiceUri": "Identity-based storage: the blob endpoint (used by the host).",
    "AzureWebJobsStorage__credential": "Identity-based storage: `managedidentity`.",
    "AzureWebJobsStorage__clientId": "Identity-based storage: client id of the user-assigned identity.",
}


@dataclass(frozen=True)
class Settings:
    graph_base_url: str = setting(
        "GRAPH_BASE_URL", "Microsoft Graph endpoint (a local emulator in tests).", _url,
        "https://graph.microsoft.com/v1.0")
    graph_auth_mode: str = setting(
        "GRAPH_AUTH_MODE", "How the app signs in to Graph: managed_identity, client_secret, certificate, "
        "or static_token (local emulators only).", _one_of(GRAPH_AUTH_MODES), "managed_identity")
    graph_tenant_id: str = setting(
        "GRAPH_TENANT_ID", "Entra tenant id (required for client_secret and certificate).", _text, "")
    graph_client_id: str = setting(
        "GRAPH_CLIENT_ID", "App registration client id (client_secret/certificate), or the client id of "
        "the user-assigned managed identity.", _text, "")
    graph_client_secret: str = setting(
        "GRAPH_CLIENT_SECRET", "Client secret for GRAPH_AUTH_MODE=client_secret.", _text, "", secret=True)
    graph_certificate_path: str = setting(
        "GRAPH_CERTIFICATE_PATH", "PEM certificate with private key for GRAPH_AUTH_MODE=certificate.",
        _text, "")
    graph_static_token: str = setting(
        "GRAPH_STATIC_TOKEN", "Bearer token for GRAPH_AUTH_MODE=static_token (emulators on localhost only).",
        _text, "", secret=True)
    anny_base_url: str = setting(
        "ANNY_BASE_URL", "anny API host (https://b.anny.eu for the EU cloud).", _url, "https://b.anny.co")
    anny_api_token: str = setting(
        "ANNY_API_TOKEN", "anny API token (Organization Settings → API); a Key Vault reference in Azure.",
        _non_empty, secret=True)
    anny_organization_id: str = setting(
        "ANNY_ORGANIZATION_ID", "anny organisation id, sent as `o=` on every request.", _non_empty)
    anny_webhook_secret: str = setting(
        "ANNY_WEBHOOK_SECRET", "Shared secret anny sends in a custom webhook header; a Key Vault reference.",
        _non_empty, secret=True)
    anny_webhook_secret_header: str = setting(
        "ANNY_WEBHOOK_SECRET_HEADER", "Name of the custom header carrying ANNY_WEBHOOK_SECRET.",
        _header_name, "x-sync-secret")
    anny_webhook_signing_key: str = setting(
        "ANNY_WEBHOOK_SIGNING_KEY", "Optional: the webhook's signing key; when set, an HMAC-SHA256 of the "
        "raw body is required too.", _text, "", secret=True)
    anny_webhook_signature_header: str = setting(
        "ANNY_WEBHOOK_SIGNATURE_HEADER", "Header carrying the hex HMAC-SHA256 signature.",
        _header_name, "x-anny-signature")
    webhook_max_body_bytes: int = setting(
        "WEBHOOK_MAX_BODY_BYTES", "Largest accepted anny webhook body (one event per delivery); larger "
        "answers 413.", _int_between(1024, 4 * 1024 * 1024), "262144")
    notification_max_body_bytes: int = setting(
        "NOTIFICATION_MAX_BODY_BYTES", "Largest accepted Graph notification body. Graph batches many "
        "notifications (about 1 KB each) into one POST and documents no maximum; larger answers 413.",
        _int_between(64 * 1024, 32 * 1024 * 1024), "4194304")
    anny_webhook_tolerance_minutes: int = setting(
        "ANNY_WEBHOOK_TOLERANCE_MINUTES", "anny deliveries whose x-anny-timestamp (or triggered_at) is "
        "further than this from now are refused with 401 as replays; long enough for anny's own retries.",
        _int_between(5, 7 * 24 * 60), "1440")
    public_base_url: str = setting(
        "PUBLIC_BASE_URL", "Public https base URL of this function app; Graph notification URLs are "
        "built from it.", _url)
    graph_notification_key: str = setting(
        "GRAPH_NOTIFICATION_KEY", "Function key appended as `?code=` to Graph notification URLs "
        "(Graph sends it back on every POST).", _text, "", secret=True)
    time_zone: str = setting(
        "SYNC_TIME_ZONE", "Time zone that defines 'today' for the sync window.", _time_zone, "Europe/Berlin")
    window_months: int = setting(
        "SYNC_WINDOW_MONTHS", "Length of the sync window in calendar months from the start of today.",
        _int_between(1, 24), "6")
    event_title_template: str = setting(
        "EVENT_TITLE_TEMPLATE", "Title of mirror events; placeholders {service}, {number}, {resource}, "
        "{status}.", _title_template, "{service} · anny #{number}")
    anny_blocker_event_title: str = setting(
        "ANNY_BLOCKER_EVENT_TITLE", "Title of mirror events for blockers a person made in anny.",
        _non_empty, "Blocked in anny")
    blocker_title_mode: str = setting(
        "BLOCKER_TITLE_MODE", "Titles of mirror blockers: `subject` (the event subject) or `neutral`.",
        _one_of(BLOCKER_TITLE_MODES), "subject")
    blocker_neutral_title: str = setting(
        "BLOCKER_NEUTRAL_TITLE", "Neutral blocker title (private/confidential events, or all when neutral).",
        _non_empty, "Busy in Outlook")
    blocking_show_as: frozenset[str] = setting(
        "BLOCKING_SHOW_AS", "Comma-separated showAs values that block in anny.", _show_as_set,
        ",".join(SHOW_AS_VALUES))
    subscription_minutes: int = setting(
        "SUBSCRIPTION_LIFETIME_MINUTES", "Lifetime requested for Graph subscriptions (≤ 10080).",
        _int_between(60, MAX_SUBSCRIPTION_MINUTES), "10000")
    delta_page_size: int = setting(
        "DELTA_PAGE_SIZE", "Prefer: odata.maxpagesize for calendarView delta.", _int_between(10, 1000), "100")
    processed_event_hours: int = setting(
        "PROCESSED_EVENT_RETENTION_HOURS", "How long processed anny webhook event ids are remembered.",
        _int_between(1, 24 * 30), "72")
    sweep_minutes: int = setting(
        "SWEEP_INTERVAL_MINUTES", "Minutes between catch-up sweeps (each room's delta and anny's recently "
        "changed bookings); the sweep timer looks every 5 minutes.", _int_between(5, 1440), "15")
    brake_share_percent: int = setting(
        "DELETION_BRAKE_PERCENT", "Brake on mass deletion: a run that would delete more than this share "
        "(percent) of a rule's mirrors, and more than DELETION_BRAKE_MIN_ITEMS, holds the rule instead.",
        _int_between(1, 100), "50")
    brake_min_items: int = setting(
        "DELETION_BRAKE_MIN_ITEMS", "Brake on mass deletion: deleting this many mirrors or fewer in one run "
        "never holds a rule.", _int_between(0, 100_000), "20")
    anny_read_limit: int = setting(
        "ANNY_READ_LIMIT", "anny reads (GET) the organisation may send per ANNY_LIMIT_WINDOW_SECONDS, "
        "summed over every instance (anny's default: 400 per 60 s).", _int_between(1, 100_000), "400")
    anny_write_limit: int = setting(
        "ANNY_WRITE_LIMIT", "anny writes (POST, PATCH, PUT, DELETE) the organisation may send per "
        "ANNY_LIMIT_WINDOW_SECONDS (anny's default: 100 per 60 s).", _int_between(1, 100_000), "100")
    anny_limit_window_s: int = setting(
        "ANNY_LIMIT_WINDOW_SECONDS", "The window of anny's rate limits, in seconds.", _int_between(1, 3600), "60")
    anny_live_reserve_percent: int = setting(
        "ANNY_LIVE_RESERVE_PERCENT", "Share of the anny budget that initial syncs and reconciliations leave "
        "to live changes, in percent.", _int_between(0, 50), "5")
    table_prefix: str = setting(
        "TABLE_PREFIX", "Prefix of the app's table names.", _table_prefix, "annysync")
    storage: StorageSettings = field(default_factory=StorageSettings, metadata={"env": None})

    @property
    def anny_limits(self) -> Limits:
        from sync.budget import Limits  # local: budget imports state, which imports settings

        return Limits(reads=self.anny_read_limit, writes=self.anny_write_limit,
                      window_s=float(self.anny_limit_window_s), live_reserve=self.anny_live_reserve_percent / 100)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; the first problem raises `SettingsError`."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for spec in declared_settings():
            values[spec.attr] = _read(spec, env)
        values["storage"] = _read_storage(env)
        settings = cls(**values)
        _check_combinations(settings)
        return settings

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict with secrets masked, safe to log or print."""
        out: dict[str, Any] = {}
        for spec in declared_settings():
            value = getattr(self, spec.attr)
            out[spec.env] = ("***" if value else "") if spec.secret else value
        return out


@dataclass(frozen=True)
class SettingSpec:
    attr: str
    env: str
    doc: str
    parse: Callable[[str], Any]
    default: str | None
    secret: bool

    @property
    def required(self) -> bool:
        return self.default is None


def declared_settings() -> list[SettingSpec]:
    """Every app setting declared on `Settings`, in declaration order."""
    specs = []
    for f in dataclasses.fields(Settings):
        if f.metadata.get("env"):
            meta = f.metadata
            specs.append(SettingSpec(f.name, meta["env"], meta["doc"], meta["parse"], meta["default"],
                                     meta["secret"]))
    return specs


def all_setting_names() -> list[str]:
    return [spec.env for spec in declared_settings()] + list(STORAGE_SETTINGS)


def _read(spec: SettingSpec, env: Mapping[str, str]) -> Any:
    raw = env.get(spec.env)
    if raw is not None and raw.startswith("@Microsoft.KeyVault("):
        raise SettingsError(spec.env, "is an unresolved Key Vault reference: check the secret exists and the "
                            "app's identity has Key Vault Secrets User (role assignments take minutes)")
    if raw is None or (spec.required and not raw.strip()):
        if spec.required:
            raise SettingsError(spec.env, f"is missing; expected: {spec.doc}")
        raw = spec.default or ""
    try:
        return spec.parse(raw)
    except ValueError as exc:
        raise SettingsError(spec.env, f"is malformed ({raw!r} given): {exc}") from None


def _read_storage(env: Mapping[str, str]) -> StorageSettings:
    connection = env.get("AzureWebJobsStorage", "").strip()
    client_id = env.get("AzureWebJobsStorage__clientId", "").strip()
    if connection:
        if connection != "UseDevelopmentStorage=true" and "=" not in connection:
            raise SettingsError("AzureWebJobsStorage", "is malformed: expected a storage connection string "
                                "(AccountName=…;AccountKey=…; or UseDevelopmentStorage=true)")
        return StorageSettings(connection_string=connection, client_id=client_id)
    account = env.get("AzureWebJobsStorage__accountName", "").strip()
    tables = env.get("AzureWebJobsStorage__tableServiceUri", "").strip()
    queues = env.get("AzureWebJobsStorage__queueServiceUri", "").strip()
    if account:
        tables = tables or f"https://{account}.table.core.windows.net"
        queues = queues or f"https://{account}.queue.core.windows.net"
    if not (tables and queues):
        raise SettingsError("AzureWebJobsStorage", "is missing; expected a connection string, or "
                            "AzureWebJobsStorage__accountName, or both AzureWebJobsStorage__tableServiceUri "
                            "and AzureWebJobsStorage__queueServiceUri")
    for name, value in (("AzureWebJobsStorage__tableServiceUri", tables),
                        ("AzureWebJobsStorage__queueServiceUri", queues)):
        try:
            _url(value)
        except ValueError as exc:
            raise SettingsError(name, f"is malformed ({value!r} given): {exc}") from None
    return StorageSettings(table_service_uri=tables, queue_service_uri=queues, client_id=client_id)


def _check_combinations(settings: Settings) -> None:
    mode = settings.graph_auth_mode
    needs: dict[str, tuple[str, ...]] = {
        "client_secret": ("GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "GRAPH_CLIENT_SECRET"),
        "certificate": ("GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "GRAPH_CERTIFICATE_PATH"),
        "static_token": ("GRAPH_STATIC_TOKEN",),
    }
    by_env = {spec.env: getattr(settings, spec.attr) for spec in declared_settings()}
    for name in needs.get(mode, ()):
        if not by_env[name]:
            raise SettingsError(name, f"is missing; GRAPH_AUTH_MODE={mode} needs it")
    host = urlsplit(settings.graph_base_url).hostname or ""
    if mode == "static_token" and not _is_loopback(host):
        raise SettingsError("GRAPH_AUTH_MODE", "static_token is only allowed with a localhost GRAPH_BASE_URL")


PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")


def environment_proxy(env: Mapping[str, str] | None = None) -> bool:
    """Whether a proxy is configured in the environment; only then do the HTTP clients read the
    environment. With that on, aiohttp (under azure-core) looks up proxies and netrc on every
    request, two thread-pool hops each time; httpx reads proxy variables per client."""
    env = os.environ if env is None else env
    return any(env.get(name) for name in PROXY_VARIABLES)
