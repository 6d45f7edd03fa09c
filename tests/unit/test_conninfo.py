"""The network timeouts added to the database URL: added where missing, never over the URL's own."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict

from service.conninfo import with_network_timeouts

URL = "postgresql://contacts:secret@db.example:5432/contacts?sslmode=verify-full"


def test_the_timeouts_are_added_to_both_ends_and_the_url_keeps_the_rest() -> None:
    params = conninfo_to_dict(with_network_timeouts(URL, 10))
    assert params["host"] == "db.example" and params["password"] == "secret" and params["sslmode"] == "verify-full"
    assert (params["keepalives"], params["keepalives_idle"], params["keepalives_interval"],
            params["keepalives_count"], params["tcp_user_timeout"]) == ("1", "5", "1", "3", "10000")
    assert params["options"] == ("-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=1"
                                 " -c tcp_keepalives_count=3 -c tcp_user_timeout=10000")


def test_what_the_url_sets_itself_wins() -> None:
    url = URL + "&keepalives_idle=30&options=-c%20tcp_user_timeout%3D60000%20-c%20search_path%3Dapp"
    params = conninfo_to_dict(with_network_timeouts(url, 10))
    assert params["keepalives_idle"] == "30" and params["tcp_user_timeout"] == "10000"
    assert params["options"] == ("-c tcp_user_timeout=60000 -c search_path=app -c tcp_keepalives_idle=5"
                                 " -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3")


def test_a_second_pass_changes_nothing_and_zero_leaves_the_url_as_it_is() -> None:
    once = with_network_timeouts(URL, 10)
    assert conninfo_to_dict(with_network_timeouts(once, 10)) == conninfo_to_dict(once)
    assert with_network_timeouts(URL, 0) == URL
