"""The contacts command as users run it: help, exit statuses, progress only on a terminal, import and export."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.auth import mint_token
from tests.support import SECRET, Service

COMMANDS = ["serve", "api", "worker", "relay", "token", "import", "export", "events", "tail", "projections", "mno"]
BAR = re.compile(r"\r|\x1b\[|━|\[#+")  # what a drawn bar leaves in a stream


def contacts(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command, as a user runs it (a child process, stdout and stderr not terminals)."""
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "CONTACTS_JWT_SECRET": SECRET, **(env or {})})


def client_env(service: Service, account=None) -> tuple[dict[str, str], object]:
    api = service.client(account)
    return {"CONTACTS_URL": service.url, "CONTACTS_TOKEN": mint_token(SECRET, api.account_id, "cli")}, api


# -- help and usage ---------------------------------------------------------------------------

def test_help_lists_every_command_in_plain_words() -> None:
    done = contacts("--help")
    assert done.returncode == 0
    listed = re.findall(r"^    (\w+)", done.stdout, re.MULTILINE)
    assert listed == COMMANDS
    assert "``" not in done.stdout and "CONTACTS_TOKEN" in done.stdout


@pytest.mark.parametrize("command", [["events", "export"], ["projections", "rebuild"], ["mno", "refresh"],
                                     *[[c] for c in COMMANDS if c not in ("events", "projections", "mno")]])
def test_every_command_has_its_own_help(command: list[str]) -> None:
    done = contacts(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: contacts {' '.join(command)}"), done.stdout[:200]


@pytest.mark.parametrize("args", [
    ["token", "--account", "not-a-uuid"],
    ["token"],
    ["token", "--account", "00000000-0000-0000-0000-000000000001", "--ttl", "forever"],
    ["events", "export", "--account", "x"],
    ["events"],
    ["tail", "--max", "0"],
    ["tail", "--idle-timeout", "soon"],
    ["projections", "rebuild", "other"],
    ["nonsense"],
    ["import"],
    ["import", "/no/such/file.csv"],
    ["export", "--opted-out", "--not-opted-out"],
    ["export", "--columns", "isOptedOut,password"],
    ["export", "--list", "12"],
])
def test_every_usage_error_exits_2_with_the_usage_line(args: list[str]) -> None:
    done = contacts(*args, env={"CONTACTS_TOKEN": "t"})
    assert done.returncode == 2, (args, done.stderr)
    assert "usage: contacts" in done.stderr and "error:" in done.stderr


def test_client_usage_errors_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("phone\n0712000001\n")
    no_token = contacts("import", str(path), env={"CONTACTS_TOKEN": "", "CONTACTS_URL": "http://127.0.0.1:9"})
    assert no_token.returncode == 2 and "CONTACTS_TOKEN" in no_token.stderr
    for flags in (["--list", "x"], ["--region", "XX"], ["--mapping", "{not json"], ["--mapping", '["phone"]']):
        done = contacts("import", str(path), *flags, env={"CONTACTS_TOKEN": "t"})
        assert done.returncode == 2, (flags, done.stderr)


# -- import -----------------------------------------------------------------------------------

def test_import_runs_an_async_job_and_prints_the_counts_and_the_report(service: Service, tmp_path: Path) -> None:
    env, api = client_env(service)
    lst = api.create_list("from the cli")
    path = tmp_path / "contacts.csv"
    path.write_text("Full Name,Mobile,Ref\nJane Wanjiru,0712 000 501,a\nAmina Otieno,0712000502,b\n"
                    "Bad Number,12,c\nAgain,0712000501,d\n")
    done = contacts("import", str(path), "--list", lst["id"], "--mapping", '{"Ref": null}', env=env)
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout
    assert "rows read 4: imported 2 (valid 2, invalid 0), skipped 2" in done.stdout
    report_url = re.search(r"report: (\S+)", done.stdout)[1]
    assert report_url.startswith(service.url + "/api/v1/contacts/imports/") and report_url.endswith("/report.csv")
    assert [r["reason"] for r in csv.DictReader(io.StringIO(api.get(report_url).text))] == [
        "unparseable_phone", "duplicate_in_file"]
    assert not BAR.search(done.stderr), done.stderr  # not a terminal: no bar
    listed = api.get("/api/v1/contacts", params={"listId": lst["id"]}).json()["contacts"]
    assert [(c["firstName"], c["lastName"]) for c in listed] == [("Jane", "Wanjiru"), ("Amina", "Otieno")]


def test_import_with_progress_forced_draws_the_bar_on_stderr_and_json_on_stdout(service: Service,
                                                                              tmp_path: Path) -> None:
    env, api = client_env(service)
    path = tmp_path / "many.csv"
    path.write_text("phone\n" + "".join(f"07180{i:05d}\n" for i in range(3000)))
    done = contacts("import", str(path), "--progress", "--json", "--region", "ke", env=env)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "completed" and job["counts"]["imported"] == 3000
    assert BAR.search(done.stderr) and "imported many.csv" in done.stderr
    assert re.search(r"3000/3000\S* rows stored 3,000 skipped 0", done.stderr), done.stderr[-500:]
    assert api.get("/api/v1/contacts").json()["total"] == 3000


def test_import_refused_or_unreachable_exits_1_with_the_services_message(service: Service, tmp_path: Path) -> None:
    env, _ = client_env(service)
    path = tmp_path / "nophone.csv"
    path.write_text("name\nJane\n")
    done = contacts("import", str(path), env=env)
    assert done.returncode == 1
    assert "422" in done.stderr and "no phone column found" in done.stderr
    wrong = contacts("import", str(path), env={**env, "CONTACTS_TOKEN": "not-a-token"})
    assert wrong.returncode == 1 and "401" in wrong.stderr
    away = contacts("import", str(path), "--url", "http://127.0.0.1:9", env=env)
    assert away.returncode == 1 and "cannot reach" in away.stderr


def test_an_import_job_that_fails_part_way_exits_1_with_the_counts_it_stored(service: Service,
                                                                          tmp_path: Path) -> None:
    env, api = client_env(service)
    path = tmp_path / "broken.csv"
    path.write_text("phone,notes\n" + "".join(f"07190{i:05d},\n" for i in range(1500))
                    + '0719099999,"' + "x" * (1024 * 1024 + 10) + '"\n')
    done = contacts("import", str(path), env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed" in done.stdout and "imported 1,000" in done.stdout
    assert "the import failed: " in done.stderr and "too long" in done.stderr
    assert api.get("/api/v1/contacts").json()["total"] == 1000


# -- export -----------------------------------------------------------------------------------

def test_export_writes_the_filtered_csv_with_the_chosen_columns(service: Service, tmp_path: Path) -> None:
    env, api = client_env(service)
    api.create_contact("0712000601", firstName="Out", tags=["vip"], isOptedOut=True)
    api.create_contact("0712000602", firstName="In", tags=["vip"])
    api.create_contact("0712000603", firstName="Other")
    out = tmp_path / "out.csv"
    done = contacts("export", "--tags", "vip", "--opted-out", "--columns", "isOptedOut,status", "--output",
                    str(out), env=env)
    assert done.returncode == 0, done.stderr
    assert list(csv.reader(io.StringIO(out.read_text()))) == [
        ["first_name", "last_name", "phone", "email", "tags", "notes", "is_opted_out", "status"],
        ["Out", "", "+254712000601", "", "vip", "", "true", "valid"]]
    assert "exported 1 contacts" in done.stderr and not BAR.search(done.stderr)
    to_stdout = contacts("export", "--not-opted-out", "--search", "in", env=env)
    assert to_stdout.returncode == 0
    assert to_stdout.stdout.splitlines()[1:] == ["In,,+254712000602,,vip,"]


def test_export_progress_counts_records_with_line_breaks_in_cells(service: Service, tmp_path: Path) -> None:
    env, api = client_env(service)
    for i in range(3):
        api.create_contact(f"07120007{i:02d}", notes="two\r\nlines, \"quoted\"")
    done = contacts("export", "--progress", "--output", str(tmp_path / "x.csv"), env=env)
    assert done.returncode == 0, done.stderr
    assert "exported 3 contacts" in done.stderr and "3/3" in done.stderr


def test_record_counter_ignores_line_breaks_inside_quotes_across_chunks() -> None:
    from service.cli_client import RecordCounter

    text = b'first_name,notes\r\nA,"x\r\ny ""q"" z"\r\nB,plain\r\n'
    for size in (1, 2, 3, 7, len(text)):
        counter = RecordCounter()
        for start in range(0, len(text), size):
            counter.feed(text[start:start + size])
        assert counter.rows == 2, size


# -- events export ----------------------------------------------------------------------------

def test_events_export_draws_no_bar_off_a_terminal_and_one_when_asked(service: Service, tmp_path: Path) -> None:
    api = service.client()
    api.create_contact("0712000801")
    env = {"CONTACTS_DATABASE_URL": service.container.database_url}
    plain = contacts("events", "export", "--account", str(api.account_id), "--output", str(tmp_path / "a"), env=env)
    assert plain.returncode == 0, plain.stderr
    assert not BAR.search(plain.stderr) and plain.stderr.strip().endswith("1 events of account "
                                                                          f"{api.account_id} written")
    forced = contacts("events", "export", "--account", str(api.account_id), "--progress", env=env)
    assert forced.returncode == 0 and BAR.search(forced.stderr) and "written" in forced.stderr
    assert [json.loads(line)["type"] for line in forced.stdout.splitlines()] == ["contacts.contact.created.v1"]



def test_mno_refresh_reloads_the_operator_prefixes_from_phonenumbers(fresh_database: str, nats_url: str) -> None:
    from command.phones import african_prefixes
    from tests.support import start_service

    start_service(fresh_database, nats_url, with_worker=False).close()  # the schema the command refreshes
    done = contacts("mno", "refresh", env={"CONTACTS_DATABASE_URL": fresh_database})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"mno_prefixes: {len(african_prefixes())} prefixes from phonenumbers ")


def test_mno_refresh_on_a_database_without_the_schema_says_to_start_the_service_once(fresh_database: str) -> None:
    """It printed a traceback (relation "mno_prefixes_source" does not exist)."""
    done = contacts("mno", "refresh", env={"CONTACTS_DATABASE_URL": fresh_database})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        "contacts mno refresh: this database has no contacts schema (no mno_prefixes table): start the service"
        " on it once (contacts serve, api or worker), which creates the schema"]
    # The commands that build the service's parts create the schema as a start does, and work.
    rebuilt = contacts("projections", "rebuild", env={"CONTACTS_DATABASE_URL": fresh_database})
    assert rebuilt.returncode == 0 and rebuilt.stdout.startswith("read tables rebuilt from 0 events"), rebuilt.stderr
    assert contacts("mno", "refresh", env={"CONTACTS_DATABASE_URL": fresh_database}).returncode == 0


@pytest.mark.parametrize("command", [["mno", "refresh"], ["projections", "rebuild"],
                                     ["events", "export", "--account", "00000000-0000-0000-0000-000000000001"]])
def test_a_database_command_names_a_database_it_cannot_use_in_one_line(postgres_server: str,
                                                                      command: list[str]) -> None:
    missing = postgres_server.rsplit("/", 1)[0] + "/no_such_database"
    done = contacts(*command, env={"CONTACTS_DATABASE_URL": missing, "CONTACTS_LOG_FORMAT": "text"})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"contacts {' '.join(command[:2])}: cannot use the database (CONTACTS_DATABASE_URL):")
    assert 'database "no_such_database" does not exist' in line
