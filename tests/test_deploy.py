"""The deployment files, checked without a Docker engine: scripts/check-deploy.sh on the real
files and on broken copies (each check must be able to fail), the entrypoint's steps with
stand-in `crontab` binaries (one that keeps the jobs, one that silently drops them, one that
is missing), its modes, and the web container's gunicorn + whitenoise serving the admin."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import check_jsonschema
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent
# The Compose Specification's JSON schema, as the check-jsonschema package ships it.
COMPOSE_SCHEMA = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"


def base_env(**extra: str) -> dict[str, str]:
    return {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "PYTHON": sys.executable, "LANG": "C.UTF-8", **extra}


def check_deploy(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "check-deploy.sh")],
        env=base_env(VENV_BIN=str(VENV_BIN), **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


# --- scripts/check-deploy.sh ---------------------------------------------------------------


def test_check_deploy_passes_on_the_projects_files():
    result = check_deploy()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("check-deploy: all checks passed")


def test_check_deploy_fails_on_a_dockerfile_hadolint_rejects(tmp_path):
    broken = tmp_path / "Dockerfile"
    text = (ROOT / "Dockerfile").read_text()
    broken.write_text(re.sub(r"^FROM .*$", "FROM python:latest", text, count=1, flags=re.M))
    result = check_deploy(DOCKERFILE=str(broken))
    assert result.returncode == 1
    assert "DL3007" in result.stdout + result.stderr
    assert f"check-deploy: FAILED: hadolint found problems in {broken}" in result.stderr


def broken_compose(tmp_path: Path, old: str, new: str) -> Path:
    text = (ROOT / "docker-compose.yml").read_text()
    assert old in text
    path = tmp_path / "docker-compose.yml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_check_deploy_fails_on_a_compose_file_outside_the_specification(tmp_path):
    path = broken_compose(tmp_path, "condition: service_healthy", "condition: when_it_feels_like_it")
    result = check_deploy(COMPOSE_FILE=str(path))
    assert result.returncode == 1
    assert "does not follow the Compose Specification" in result.stderr


def test_check_deploy_fails_when_compose_cannot_resolve_the_file(tmp_path):
    # Valid against the schema, but names a service that does not exist.
    path = broken_compose(tmp_path, "      redis:\n        condition: service_healthy", "      cache:\n        condition: service_healthy")
    result = check_deploy(COMPOSE_FILE=str(path))
    assert result.returncode == 1
    assert "docker-compose cannot load" in result.stderr


def test_check_deploy_fails_when_the_guides_expectations_are_not_met(tmp_path):
    text = (ROOT / "docker-compose.yml").read_text()
    archiver = text.index("  archiver:")
    restart = text.index("    restart: unless-stopped\n", archiver)
    path = tmp_path / "docker-compose.yml"
    path.write_text(text[:restart] + text[restart + len("    restart: unless-stopped\n"):])
    result = check_deploy(COMPOSE_FILE=str(path))
    assert result.returncode == 1
    assert "archiver needs restart: unless-stopped" in result.stderr


def test_the_compose_file_validates_against_the_compose_specification_schema():
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema)
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert list(validator.iter_errors(document)) == []

    document["services"]["archiver"]["restart"] = ["unless-stopped"]
    document["services"]["data"]["volume"] = ["typo for volumes"]
    errors = sorted(error.message for error in validator.iter_errors(document))
    assert len(errors) == 2, errors


# --- docker-compose.yml, Dockerfile, .env.example ------------------------------------------


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_compose_services_are_the_ones_the_runbook_uses():
    services = compose()
    assert set(services) == {"data", "redis", "archiver", "web"}
    assert services["data"]["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(services["data"]["healthcheck"]["test"])
    assert services["redis"]["image"].startswith("redis/redis-stack-server:")
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    archiver = services["archiver"]
    assert archiver["command"] == ["archiver"] and archiver["build"] == "."
    assert archiver["restart"] == "unless-stopped" and archiver["env_file"] == ".env"
    assert archiver["depends_on"] == {"data": {"condition": "service_healthy"}, "redis": {"condition": "service_healthy"}}
    assert archiver["healthcheck"]["test"] == ["CMD", "python", "manage.py", "check_archiver_health"]
    web = services["web"]
    assert web["command"] == ["web"] and web["ports"] == ["127.0.0.1:8000:8000"]
    assert archiver["init"] is True and archiver["user"] == "root"  # cron needs root, and SIGTERM forwarded
    assert web["depends_on"] == {"data": {"condition": "service_healthy"}}


def test_the_dockerfile_runs_as_a_user_and_checks_the_archivers_health():
    text = (ROOT / "Dockerfile").read_text()
    # The upstream image by default; scripts/docker-smoke.sh passes a local stand-in.
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.12-slim-bookworm$", text, re.M)
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}$", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"apt-get install .*\bcron\b", text)
    assert "collectstatic" in text
    assert re.search(r'^HEALTHCHECK .*\n\s+CMD \["python", "manage.py", "check_archiver_health"\]', text, re.M)
    assert 'ENTRYPOINT ["/app/docker/entrypoint.sh"]' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".cron-env", ".venv", ".git"} <= set(ignored)
    assert {"tests", "bench", "harness", "scripts"} <= set(ignored)  # test-only code stays out of the image


# Debian's /etc/pam.d/cron (bookworm), the lines that matter.
DEBIAN_PAM_CRON = """# Sets the loginuid process attribute
session    required     pam_loginuid.so
session       required   pam_env.so
session    required   pam_limits.so
"""


def test_the_dockerfile_makes_pam_loginuid_optional_for_cron(tmp_path):
    # Without this, cron in a container refuses every job (pam_loginuid cannot write
    # /proc/self/loginuid), and nothing says so.
    expression = re.search(r"sed -i '([^']+)' /etc/pam.d/cron", (ROOT / "Dockerfile").read_text()).group(1)
    pam = tmp_path / "cron"
    pam.write_text(DEBIAN_PAM_CRON)
    subprocess.run(["sed", "-i", expression, str(pam)], check=True)
    assert pam.read_text() == DEBIAN_PAM_CRON.replace(
        "session    required     pam_loginuid.so", "session    optional     pam_loginuid.so"
    )


READS = [
    re.compile(r"""(?:os\.environ\.get|os\.getenv|os\.environ\.setdefault|env_\w+)\(\s*["']([A-Z][A-Z0-9_]*)["']"""),
    re.compile(r"""os\.environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""),
    # archive_site/env.py's table of the ARCHIVER variables: ("KEY", "VARIABLE", "kind", ...)
    re.compile(r"""^\s*\("[A-Z_]+", "([A-Z][A-Z0-9_]*)", "(?:text|path|int|bool)",""", re.M),
]
SHELL_READS = [re.compile(r"\$\{([A-Z][A-Z0-9_]*)"), re.compile(r"\$([A-Z][A-Z0-9_]*)"), re.compile(r"\bflag ([A-Z][A-Z0-9_]*)")]
BASH_OWN = {"BASH_SOURCE", "SECONDS"}


def variables_read() -> set[str]:
    names: set[str] = set()
    for path in [*ROOT.glob("archive_site/**/*.py"), *ROOT.glob("conversations/**/*.py"), *ROOT.glob("docker/*.py")]:
        for pattern in READS:
            names.update(pattern.findall(path.read_text()))
    for path in ROOT.glob("docker/*.sh"):
        text = path.read_text()
        assigned = set(re.findall(r"^\s*(?:local\s+)?([A-Z][A-Z0-9_]*)=", text, re.M))
        for pattern in SHELL_READS:
            names.update(set(pattern.findall(text)) - assigned - BASH_OWN)
    return names


def test_env_example_documents_every_variable_the_project_reads():
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    read = variables_read()
    assert {"DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY", "ARCHIVER_SCHEDULE_MINUTES", "ARCHIVER_RUN_AT_START"} <= read
    assert read - documented == set()


def test_env_example_database_url_matches_the_postgres_variables():
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.M))
    assert values["DATABASE_URL"] == "postgresql://archiver:change-me@data:5432/archive"
    assert (values["POSTGRES_USER"], values["POSTGRES_PASSWORD"], values["POSTGRES_DB"]) == ("archiver", "change-me", "archive")
    assert values["REDIS_URL"] == "redis://redis:6379/0"


# --- the entrypoint's crontab steps, with stand-in crontab binaries -------------------------

FAKE_CRONTABS = {
    # Keeps what it is given, like the real one.
    "working": """#!/bin/sh
if [ "$1" = "-l" ]; then
    [ -f "$FAKE_CRONTAB_STORE" ] || { echo "no crontab for $(id -un)" >&2; exit 1; }
    exec cat "$FAKE_CRONTAB_STORE"
fi
exec cp "$1" "$FAKE_CRONTAB_STORE"
""",
    # Accepts everything and keeps nothing (a crontab writing where cron does not look).
    "silent": "#!/bin/sh\nexit 0\n",
    # What sh answers for a command that is not installed.
    "missing": '#!/bin/sh\necho "sh: 1: crontab: not found" >&2\nexit 127\n',
}


@pytest.fixture
def fake_crontab(tmp_path) -> Iterator[Callable[[str], dict[str, str]]]:
    def install(kind: str) -> dict[str, str]:
        bin_dir = tmp_path / f"bin-{kind}"
        bin_dir.mkdir()
        crontab = bin_dir / "crontab"
        crontab.write_text(FAKE_CRONTABS[kind])
        crontab.chmod(0o755)
        env = base_env(FAKE_CRONTAB_STORE=str(tmp_path / "crontab.txt"), ARCHIVER_CRON_ENV_FILE=str(tmp_path / "cron-env"))
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
        return env

    yield install


def bash(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"source {ENTRYPOINT} && {script}"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_install_crontab_passes_when_the_crontab_holds_the_jobs(fake_crontab, tmp_path):
    env = fake_crontab("working")
    result = bash("install_crontab", env)
    assert result.returncode == 0, result.stderr
    assert "startup: the crontab holds all 2 jobs: 0 * * * * archive_checkpoints; 30 3 * * * purge_history" in result.stdout

    installed = (tmp_path / "crontab.txt").read_text().splitlines()
    assert [line.split(" /")[0] for line in installed] == ["0 * * * *", "30 3 * * *"]
    assert all("%" not in line and "crontab run" in line for line in installed)

    shown = subprocess.run(
        [sys.executable, "manage.py", "crontab", "show"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "archive_checkpoints" in shown.stdout and "purge_history" in shown.stdout


def test_reinstalling_with_another_schedule_replaces_the_jobs(fake_crontab, tmp_path):
    env = fake_crontab("working")
    (tmp_path / "crontab.txt").write_text("15 4 * * * /usr/bin/true # someone else's job\n")
    assert bash("install_crontab", env).returncode == 0
    result = bash("install_crontab", {**env, "ARCHIVER_SCHEDULE_MINUTES": "15"})
    assert result.returncode == 0, result.stderr
    installed = (tmp_path / "crontab.txt").read_text().splitlines()
    assert installed[0] == "15 4 * * * /usr/bin/true # someone else's job"
    assert [line.split(" /")[0] for line in installed[1:]] == ["*/15 * * * *", "30 3 * * *"]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("silent", "startup: FAILED: the crontab lacks 2 of the 2 jobs after 'manage.py crontab add'"),
        ("missing", "startup: FAILED: 'crontab -l' failed (exit 127: sh: 1: crontab: not found)"),
    ],
)
def test_install_crontab_fails_loudly_when_the_jobs_are_not_installed(fake_crontab, kind, reason):
    env = fake_crontab(kind)
    # The trap: django-crontab reports success either way ...
    add = subprocess.run(
        [sys.executable, "manage.py", "crontab", "add"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert add.returncode == 0
    # ... so the entrypoint checks, and stops.
    result = bash("install_crontab", env)
    assert result.returncode == 1
    assert reason in result.stderr
    assert "entrypoint: FATAL: the crontab does not hold the archiver's jobs, so nothing would ever be archived" in result.stderr


def test_verify_crontab_names_a_crontab_that_is_not_installed_at_all(tmp_path):
    env = base_env()
    env["PATH"] = str(tmp_path)  # nothing there: not even a crontab binary
    result = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "startup.py"), "verify-crontab"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "startup: FAILED: crontab is not installed, so no job would ever run; install cron in the image." in result.stderr


# --- the entrypoint's modes -----------------------------------------------------------------


def entrypoint(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ENTRYPOINT), *args], env=env, cwd="/", capture_output=True, text=True, timeout=120)


def test_any_other_command_runs_as_given():
    result = entrypoint("python", "-c", "import sys; print('ran', sys.argv[1:])", "a b", "%", env=base_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ran ['a b', '%']\n"


def test_archiver_mode_refuses_to_start_without_root(tmp_path):
    env = base_env(ARCHIVER_CRON_USER="app")
    if os.geteuid() == 0:
        # The script comes on stdin: nobody may not be allowed into the checkout's folder.
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "bash", "/dev/stdin", "archiver"]
    else:
        command = ["bash", "/dev/stdin", "archiver"]
    with ENTRYPOINT.open() as script:
        result = subprocess.run(command, env=env, cwd="/", stdin=script, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "entrypoint: FATAL: archiver mode starts cron, which needs root" in result.stderr


def test_archiver_mode_refuses_to_start_without_cron(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = base_env()
    env["PATH"] = f"{bin_dir}:{VENV_BIN}:/usr/bin:/bin"  # no sbin: no cron daemon
    assert shutil.which("cron", path=env["PATH"]) is None
    result = entrypoint("archiver", env=env)
    assert result.returncode == 1
    if os.geteuid() == 0:
        assert "entrypoint: FATAL: cron is not installed in this image" in result.stderr
    else:  # the root check comes first
        assert "entrypoint: FATAL: archiver mode starts cron, which needs root" in result.stderr


@pytest.mark.parametrize(("value", "expected"), [("1", 0), ("yes", 0), ("ON", 0), ("0", 1), ("off", 1)])
def test_run_at_start_flag(value, expected):
    assert bash("flag ARCHIVER_RUN_AT_START 1", base_env(ARCHIVER_RUN_AT_START=value)).returncode == expected


def test_a_bad_run_at_start_flag_stops_the_container():
    result = bash("flag ARCHIVER_RUN_AT_START 1", base_env(ARCHIVER_RUN_AT_START="maybe"))
    assert result.returncode == 1
    assert "FATAL: ARCHIVER_RUN_AT_START=maybe is not a yes/no value" in result.stderr


def test_waiting_for_the_database_gives_up_with_a_message():
    env = base_env(DATABASE_URL="postgresql://nobody:secret@127.0.0.1:1/archive")
    result = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "startup.py"), "wait-db", "1"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "startup: waiting for the database:" in result.stderr
    assert "startup: FAILED: the database did not accept connections within 1s" in result.stderr
    assert "check DATABASE_URL and that the data service is up" in result.stderr


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"])
def test_web_mode_refuses_to_start_without_its_settings(missing):
    env = base_env(DJANGO_SECRET_KEY="k", DJANGO_ALLOWED_HOSTS="127.0.0.1", DATABASE_URL="postgresql://x@127.0.0.1:1/x")
    env[missing] = ""
    result = entrypoint("web", env=env)
    assert result.returncode == 1
    assert f"entrypoint: FATAL: {missing} is not set" in result.stderr
    assert "waiting for the database" not in result.stderr  # at once


def test_web_mode_stops_when_the_schema_is_not_migrated(tmp_path):
    env = base_env(DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}", ARCHIVER_DB_WAIT_SECONDS="0",
                   DJANGO_SECRET_KEY="k", DJANGO_ALLOWED_HOSTS="127.0.0.1")
    result = entrypoint("web", env=env)
    assert result.returncode == 1
    assert "FATAL: the database schema is still not up to date after 0s" in result.stderr
    assert "docker-compose run --rm web python manage.py migrate" in result.stderr


# --- the web container: gunicorn serves the admin, whitenoise its static files ---------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gunicorn_serves_the_admin_and_whitenoise_its_static_files(tmp_path):
    (tmp_path / "web_settings.py").write_text(
        f"from archive_site.settings import *  # noqa\nSTATIC_ROOT = {str(tmp_path / 'static')!r}\n"
    )
    env = base_env(
        PYTHONPATH=f"{tmp_path}:{ROOT}",
        DJANGO_SETTINGS_MODULE="web_settings",
        DJANGO_SECRET_KEY="web-test-only",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DATABASE_URL=f"sqlite:///{tmp_path / 'web.sqlite3'}",
    )
    collect = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert collect.returncode == 0, collect.stderr
    assert (tmp_path / "static" / "admin" / "css" / "base.css.gz").exists()  # compressed copies

    port = free_port()
    server = subprocess.Popen(
        [str(VENV_BIN / "gunicorn"), "archive_site.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                login = urllib.request.urlopen(f"{base}/admin/login/", timeout=5)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                time.sleep(0.2)
        else:
            pytest.fail("gunicorn did not answer within 20 s")
        assert login.status == 200 and b"csrfmiddlewaretoken" in login.read()
        css = urllib.request.urlopen(
            urllib.request.Request(f"{base}/static/admin/css/base.css", headers={"Accept-Encoding": "gzip"}), timeout=5
        )
        assert css.status == 200
        assert css.headers["Content-Encoding"] == "gzip"
        assert "max-age" in css.headers["Cache-Control"]  # whitenoise's header; Django serves nothing here
    finally:
        server.terminate()
        server.communicate(timeout=30)  # reaps it and closes its output pipe


# --- the admin behind a TLS proxy --------------------------------------------------------


PRODUCTION = {
    "DJANGO_SECRET_KEY": "a-long-random-production-key-" + "k" * 40,
    "DJANGO_ALLOWED_HOSTS": "archive.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://archive.example.com",
    "DJANGO_DEBUG": "0",
    "DJANGO_BEHIND_TLS_PROXY": "1",
    "DJANGO_SECURE_COOKIES": "1",
    "DJANGO_SECURE_SSL_REDIRECT": "1",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "DJANGO_SECURE_HSTS_PRELOAD": "1",
}


def check_deploy_command(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env={**base, "DJANGO_SETTINGS_MODULE": "archive_site.settings", **env},
        capture_output=True, text=True, timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_production_values():
    documented = (ROOT / ".env.example").read_text()
    for name, value in PRODUCTION.items():
        if name.startswith("DJANGO_SECURE") or name in ("DJANGO_BEHIND_TLS_PROXY", "DJANGO_CSRF_TRUSTED_ORIGINS"):
            assert f"#   {name}=" in documented, f".env.example does not document the production value of {name}"
    result = check_deploy_command(PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_warns_without_them():
    result = check_deploy_command({"DJANGO_SECRET_KEY": PRODUCTION["DJANGO_SECRET_KEY"], "DJANGO_ALLOWED_HOSTS": "x"})
    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr + result.stdout


PROXY_REQUESTS = """
from django.conf import settings
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
client = Client()
page = client.get("/admin/login/", HTTP_HOST="archive.example.com", HTTP_X_FORWARDED_PROTO="https")
print(page.status_code, page["Strict-Transport-Security"], page.cookies["csrftoken"]["secure"], sep="|")
plain = client.get("/admin/login/", HTTP_HOST="archive.example.com")
print(plain.status_code, plain["Location"], sep="|")
print(client.get("/metrics", HTTP_HOST="archive.example.com").status_code)
print(settings.SESSION_COOKIE_AGE, settings.SESSION_EXPIRE_AT_BROWSER_CLOSE, sep="|")
"""


def test_behind_the_proxy_the_admin_sets_secure_cookies_hsts_and_a_short_session(tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env = {**base, **PRODUCTION, "DJANGO_SETTINGS_MODULE": "archive_site.settings",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}"}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + PROXY_REQUESTS],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    https, plain, metrics, session = result.stdout.split("\n")[:4]
    # Over the proxy's HTTPS: the login page, with HSTS and a secure CSRF cookie.
    assert https == "200|max-age=31536000; includeSubDomains; preload|True"
    # Plain HTTP is sent to HTTPS; /metrics is not (here it has no database: 503).
    assert plain == "301|https://archive.example.com/admin/login/"
    assert metrics == "503"
    assert session == "28800|True"  # eight hours, and the browser's session
