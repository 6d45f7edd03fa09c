"""What every connection to PostgreSQL says when it opens: give up on a peer that stopped answering."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict, make_conninfo

KEEPALIVE_PROBES = 3


def with_network_timeouts(database_url: str, seconds: int) -> str:
    """``database_url`` with both ends giving the other up after about ``seconds`` of silence (0: as it is).

    Without this, a connection whose server went away without a word (a network
    partition, a managed database failing over to another address: packets dropped, not
    refused) held its request for as long as the kernel keeps retrying, 15 minutes for
    data sent and two hours for an idle wait. The service's side gets TCP keepalives and
    ``tcp_user_timeout`` (libpq); the server's side the same through ``options``, so that
    PostgreSQL ends the session of a service that vanished, and the locks it held (an
    import's lease, the events table's) go with it. Parameters the URL sets itself win.
    """
    if seconds <= 0:
        return database_url
    params = conninfo_to_dict(database_url)
    idle = max(1, seconds // 2)
    interval = max(1, (seconds - idle) // KEEPALIVE_PROBES)
    client = {"keepalives": "1", "keepalives_idle": str(idle), "keepalives_interval": str(interval),
              "keepalives_count": str(KEEPALIVE_PROBES), "tcp_user_timeout": str(seconds * 1000)}
    server = {"tcp_keepalives_idle": idle, "tcp_keepalives_interval": interval,
              "tcp_keepalives_count": KEEPALIVE_PROBES, "tcp_user_timeout": seconds * 1000}
    added: dict[str, str] = {name: value for name, value in client.items() if name not in params}
    options = str(params.get("options", ""))
    more = " ".join(f"-c {name}={value}" for name, value in server.items() if f"{name}=" not in options)
    if more:
        added["options"] = f"{options} {more}".strip()
    return make_conninfo(database_url, **added) if added else database_url
