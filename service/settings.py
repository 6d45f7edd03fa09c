"""Settings read once from the environment (prefix ``CONTACTS_``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEV_JWT_SECRET = "contacts-dev-secret-change-me-in-production-0123456789"


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"CONTACTS_{name}", default).strip()


@dataclass(frozen=True)
class Settings:
    """Every knob of the service; see the configuration table in the README."""

    database_url: str = ""
    nats_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=lambda: Path(".data"))
    jwt_secret: str = DEV_JWT_SECRET
    jwt_public_key: str = ""
    jwks_url: str = ""
    jwt_audience: str = ""
    smtp_url: str = ""
    mail_from: str = "no-reply@localhost"
    export_email_max_bytes: int = 10 * 1024 * 1024
    export_email_per_hour: int = 20
    trash_retention_days: int = 90
    default_region: str = "KE"
    hash_key: str = ""
    nats_stream: str = "CONTACTS"
    nats_subject_prefix: str = "contacts"
    nats_duplicate_window_s: int = 24 * 3600
    nats_replicas: int = 1
    store_messages: bool = False  # events/outbox.py: measured slower for updates (docs/benchmarks.md)
    db_pool_size: int = 10
    db_timeout_s: int = 2
    db_network_timeout_s: int = 10  # service/conninfo.py
    import_max_bytes: int = 200 * 1024 * 1024
    import_max_columns: int = 200
    import_max_record_chars: int = 1024 * 1024
    import_xlsx_max_uncompressed_bytes: int = 200 * 1024 * 1024
    import_xlsx_fast_max_cells: int = 1_000_000
    inbound_subject: str = "sms.inbound"
    rate_limit_writes_per_minute: int = 1200
    rate_limit_burst: int = 200
    request_max_bytes: int = 1024 * 1024

    @property
    def jwt_secret_is_default(self) -> bool:
        return self.jwt_secret == DEV_JWT_SECRET

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            database_url=_env("DATABASE_URL"),
            nats_url=_env("NATS_URL"),
            host=_env("HOST", "127.0.0.1"),
            port=int(_env("PORT", "8000")),
            data_dir=Path(_env("DATA_DIR", ".data")).expanduser().resolve(),
            jwt_secret=_env("JWT_SECRET") or DEV_JWT_SECRET,
            jwt_public_key=_load_key(_env("JWT_PUBLIC_KEY")),
            jwks_url=_env("JWKS_URL"),
            jwt_audience=_env("JWT_AUDIENCE"),
            smtp_url=_env("SMTP_URL"),
            mail_from=_env("MAIL_FROM", "no-reply@localhost"),
            export_email_max_bytes=int(_env("EXPORT_EMAIL_MAX_BYTES", str(10 * 1024 * 1024))),
            export_email_per_hour=int(_env("EXPORT_EMAIL_PER_HOUR", "20")),
            trash_retention_days=int(_env("TRASH_RETENTION_DAYS", "90")),
            default_region=_env("DEFAULT_REGION", "KE").upper(),
            hash_key=_env("HASH_KEY"),
            nats_stream=_env("NATS_STREAM", "CONTACTS"),
            nats_subject_prefix=_env("NATS_SUBJECT_PREFIX", "contacts"),
            nats_duplicate_window_s=int(_env("NATS_DUPLICATE_WINDOW_S", str(24 * 3600))),
            nats_replicas=int(_env("NATS_REPLICAS", "1")),
            store_messages=_env("STORE_MESSAGES", "0").lower() in ("1", "true", "yes"),
            db_pool_size=int(_env("DB_POOL_SIZE", "10")),
            db_timeout_s=int(_env("DB_TIMEOUT_S", "2")),
            db_network_timeout_s=int(_env("DB_NETWORK_TIMEOUT_S", "10")),
            import_max_bytes=int(_env("IMPORT_MAX_BYTES", str(200 * 1024 * 1024))),
            import_max_columns=int(_env("IMPORT_MAX_COLUMNS", "200")),
            import_max_record_chars=int(_env("IMPORT_MAX_RECORD_CHARS", str(1024 * 1024))),
            import_xlsx_max_uncompressed_bytes=int(_env("IMPORT_XLSX_MAX_UNCOMPRESSED_BYTES",
                                                         str(200 * 1024 * 1024))),
            import_xlsx_fast_max_cells=int(_env("IMPORT_XLSX_FAST_MAX_CELLS", "1000000")),
            inbound_subject=_env("INBOUND_SUBJECT", "sms.inbound"),
            rate_limit_writes_per_minute=int(_env("RATE_LIMIT_WRITES_PER_MINUTE", "1200")),
            rate_limit_burst=int(_env("RATE_LIMIT_BURST", "200")),
            request_max_bytes=int(_env("REQUEST_MAX_BYTES", str(1024 * 1024))),
        )


def _load_key(value: str) -> str:
    """Accept a PEM key inline or a path to a PEM file."""
    if value and not value.startswith("-----") and Path(value).is_file():
        return Path(value).read_text()
    return value
