"""What metadata.db remembers about the endpoints jobs talked to: the structured-output dialect that worked for
a provider, endpoint and model, and when it last answered, so the next job starts there (providers/structured.py
says why negotiating costs requests). The endpoint half of ``Store``; keys never hold a secret (the provider
gives its masked endpoint)."""
from __future__ import annotations


def _utcnow() -> str:
    from .core import utcnow

    return utcnow()


class EndpointsMixin:
    """Per provider/endpoint/model memory (connections and transactions come from the store itself)."""

    def endpoint_dialect(self, provider: str, endpoint: str, model: str) -> tuple[str | None, bool]:
        """The structured-output dialect last found to work there (None: never negotiated) and whether the
        endpoint has answered this model before."""
        row = self.connection().execute(
            "SELECT structured_output FROM endpoints WHERE provider = ? AND endpoint = ? AND model = ?",
            (provider, endpoint, model)).fetchone()
        return (row[0], True) if row is not None else (None, False)

    def remember_endpoint(self, provider: str, endpoint: str, model: str, dialect: str | None) -> None:
        """The endpoint answered; ``dialect`` (when a schema was asked for) is what worked."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO endpoints (provider, endpoint, model, structured_output, answered_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (provider, endpoint, model) DO UPDATE SET "
                "structured_output = COALESCE(excluded.structured_output, endpoints.structured_output), "
                "answered_at = excluded.answered_at", (provider, endpoint, model, dialect, _utcnow()))
