"""`.env.example` lists every environment variable the hub and its scripts read, each with a comment."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# How the code reads a variable: settings' env_* helpers, os.environ/os.getenv, gunicorn.conf.py's
# _int, a module constant named *_ENV, and ${NAME} in the shell scripts and the compose file.
PYTHON_READS = re.compile(
    r"""(?:env_(?:str|bool|int|list)|_int|os\.environ\.get|os\.getenv|os\.environ\[)\(?\s*["']([A-Z][A-Z0-9_]+)["']"""
    r"""|^[A-Z_]+_ENV\s*=\s*["']([A-Z][A-Z0-9_]+)["']""",
    re.MULTILINE,
)
SHELL_READS = re.compile(r"\$\{([A-Z][A-Z0-9_]+)[:}?-]")
NOT_CONFIGURATION = {"DJANGO_SETTINGS_MODULE", "POSTGRES_USER", "POSTGRES_DB"}  # set by code/images


def variables_read() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in [*(ROOT / "iothub").rglob("*.py"), ROOT / "gunicorn.conf.py"]:
        for match in PYTHON_READS.finditer(path.read_text()):
            found.setdefault(match.group(1) or match.group(2), str(path.relative_to(ROOT)))
    for path in [ROOT / "scripts" / "run", ROOT / "scripts" / "lib.sh", ROOT / "docker-compose.yml"]:
        for name in SHELL_READS.findall(path.read_text()):
            found.setdefault(name, str(path.relative_to(ROOT)))
    return {name: where for name, where in found.items() if name not in NOT_CONFIGURATION}


def documented() -> dict[str, str]:
    """Each variable of .env.example with the comment line above it."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    entries = {}
    for index, line in enumerate(lines):
        match = re.match(r"^(?:# )?([A-Z][A-Z0-9_]+)=", line)
        if match:
            above = next((lines[i] for i in range(index - 1, -1, -1) if not re.match(r"^# [A-Z_]+=", lines[i])), "")
            entries[match.group(1)] = above
    return entries


def test_the_scan_finds_the_variables_the_settings_read():
    # Guards the scan itself: were it blind, the next test would pass on an empty list.
    read = variables_read()
    assert {"DATABASE_URL", "SECRET_KEY", "DEBUG", "DB_POOL_MAX_SIZE", "IOTHUB_PORT", "DB_PASSWORD"} <= set(read)
    assert "IOTHUB_ADMIN_PASSWORD" in read


def test_env_example_lists_every_variable_read_with_a_comment():
    entries = documented()

    missing = {name: where for name, where in variables_read().items() if name not in entries}
    assert not missing, f"variables read but not in .env.example: {missing}"
    uncommented = [name for name, above in entries.items() if not above.startswith("#")]
    assert not uncommented, f"variables in .env.example without a comment line above: {uncommented}"
