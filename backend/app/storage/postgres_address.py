"""The database's address as it may be shown: in logs, /health and error messages, never with its
password (DATABASE_URL may hold one)."""

from __future__ import annotations

from urllib.parse import quote

import psycopg


def redacted(url: str) -> str:
    """The database's address with its password as `***`, for logs, /health and errors."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "PostgreSQL (DATABASE_URL)"
    host, port, name = params.get("host", "localhost"), params.get("port", "5432"), params.get("dbname", "")
    user, password = str(params.get("user") or ""), ":***" if params.get("password") else ""
    login = f"{user}{password}@" if user or password else ""
    return f"postgresql://{login}{host}:{port}/{name}"


def scrubbed(text: str, url: str) -> str:
    """`text` (an error message, a log line) with the URL's password, if it has one, as `***`."""
    try:
        password = str(psycopg.conninfo.conninfo_to_dict(url).get("password") or "")
    except psycopg.ProgrammingError:
        return text.replace(url, "PostgreSQL (DATABASE_URL)")
    for secret in {password, quote(password, safe="")} - {""}:
        text = text.replace(secret, "***")
    return text
