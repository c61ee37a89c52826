"""The production docker-compose.yml renders, and refuses to render without its secrets.

Only ``docker-compose config`` runs (no Docker engine is needed). The test
skips where the ``docker-compose`` binary is absent, unless
``CURATION_REQUIRE_SERVICES=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, REQUIRE_SERVICES

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SERVICES = {"web", "worker", "beat", "migrate", "redis", "postgres"}
APP_SERVICES = ("web", "worker", "beat", "migrate")
REQUIRED_VARIABLES = ("CURATION_SECRET_KEY", "POSTGRES_PASSWORD")
# Values no one would ever choose: finding them in the rendered config proves
# that the secrets come from the environment and from nowhere else.
SENTINELS = {
    "CURATION_SECRET_KEY": "sentinel-secret-key-7f3a9c",
    "POSTGRES_PASSWORD": "sentinel-pg-password-4b81d2",
}


def _compose_binary() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        message = (
            "docker-compose is not installed "
            "(Debian: apt-get install docker-compose); cannot validate docker-compose.yml"
        )
        if REQUIRE_SERVICES:
            pytest.fail(f"{message}, and CURATION_REQUIRE_SERVICES=1 requires it")
        pytest.skip(message)
    return binary


def _compose_config(
    tmp_path: Path, variables: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    """Run ``docker-compose config`` with exactly ``variables`` as the required ones.

    An empty ``--env-file`` keeps a developer's ``.env`` from supplying a
    secret, and the two variables are removed from the inherited environment.
    """
    binary = _compose_binary()
    env_file = tmp_path / "empty.env"
    env_file.write_text("", encoding="utf-8")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in REQUIRED_VARIABLES and not key.startswith("COMPOSE_")
    }
    env.update(variables)
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", *extra],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _service_blocks(rendered: str) -> dict[str, str]:
    """Split the rendered YAML into the text of each service (no YAML library needed)."""
    blocks: dict[str, list[str]] = {}
    section: str | None = None
    current: str | None = None
    for line in rendered.splitlines():
        if line and not line[0].isspace():
            section, current = line.split(":", 1)[0], None
            continue
        if section != "services":
            continue
        match = re.match(r"^  ([A-Za-z0-9_.-]+):\s*$", line)
        if match:
            current = match.group(1)
            blocks[current] = []
        elif current is not None:
            blocks[current].append(line)
    return {name: "\n".join(lines) for name, lines in blocks.items()}


def test_compose_file_renders_with_required_secrets(tmp_path: Path) -> None:
    result = _compose_config(tmp_path, SENTINELS)
    assert result.returncode == 0, result.stderr

    rendered = result.stdout
    blocks = _service_blocks(rendered)
    assert set(blocks) == SERVICES, sorted(blocks)

    listed = _compose_config(tmp_path, SENTINELS, "--services")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == SERVICES

    # Health checks, and start-up ordered on them.
    assert "healthcheck:" in blocks["web"] and "/healthz" in blocks["web"]
    assert "healthcheck:" in blocks["redis"] and "redis-cli" in blocks["redis"]
    assert "ping" in blocks["redis"]
    assert "healthcheck:" in blocks["postgres"] and "pg_isready" in blocks["postgres"]
    for name in ("web", "worker", "beat"):
        assert "condition: service_completed_successfully" in blocks[name], name
        assert "condition: service_healthy" in blocks[name], name
    assert "condition: service_healthy" in blocks["migrate"]

    # The processes and their settings.
    assert "- web" in blocks["web"] and "- 0.0.0.0" in blocks["web"]
    assert "default,scoring,training" in blocks["worker"]
    assert "beat" in blocks["beat"] and "/data/" in blocks["beat"]
    assert "- db" in blocks["migrate"] and "- upgrade" in blocks["migrate"]
    assert "image: redis:7" in blocks["redis"]
    assert "image: postgres:16" in blocks["postgres"]
    for name in APP_SERVICES:
        block = blocks[name]
        assert "CURATION_ENV: production" in block, name
        assert "CURATION_DATABASE_URL: postgresql+psycopg://" in block, name
        assert "CURATION_BROKER_URL: redis://redis:6379/0" in block, name
        assert "CURATION_RESULT_BACKEND: redis://redis:6379/1" in block, name
        assert "CURATION_DATA_DIR: /data" in block, name
        assert f"CURATION_SECRET_KEY: {SENTINELS['CURATION_SECRET_KEY']}" in block, name
        assert f":{SENTINELS['POSTGRES_PASSWORD']}@postgres:5432/" in block, name
    assert f"POSTGRES_PASSWORD: {SENTINELS['POSTGRES_PASSWORD']}" in blocks["postgres"]

    # No secret has a value of its own: every value of a secret setting in the
    # rendered config is the sentinel passed in.
    for key in ("CURATION_SECRET_KEY", "POSTGRES_PASSWORD"):
        values = set(re.findall(rf"^\s+{key}: (.*)$", rendered, flags=re.MULTILINE))
        assert values == {SENTINELS[key]}, (key, values)
    passwords = set(re.findall(r"postgresql\+psycopg://[^:/@]+:([^@]*)@", rendered))
    assert passwords == {SENTINELS["POSTGRES_PASSWORD"]}, passwords


def test_compose_file_has_no_secret_defaults() -> None:
    """Every reference to a secret is ``${VAR:?message}``: required, never defaulted."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for key in REQUIRED_VARIABLES:
        references = re.findall(rf"\$\{{{key}([^}}]*)\}}", text)
        assert references, f"{key} is never read from the environment"
        for reference in references:
            assert reference.startswith(":?"), f"${{{key}{reference}}} is not required"
        # Never a bare $VAR (which renders empty when unset), never a literal value.
        assert not re.search(rf"\${key}\b", text), key
        assert not re.search(rf"^\s+{key}:\s*[^$\s]", text, flags=re.MULTILINE), key


@pytest.mark.parametrize("missing", REQUIRED_VARIABLES)
def test_compose_config_fails_without_a_required_secret(tmp_path: Path, missing: str) -> None:
    variables = {key: value for key, value in SENTINELS.items() if key != missing}
    result = _compose_config(tmp_path, variables)
    assert result.returncode != 0, result.stdout
    assert missing in result.stderr, result.stderr
    for value in variables.values():
        assert value not in result.stdout
