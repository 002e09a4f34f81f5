"""The disclosure log's signing key and witnesses, read from configuration at start."""

from __future__ import annotations

from nameko.extensions import DependencyProvider

from shequ_services.disclosure.checkpoint import (
    InvalidKey,
    LogSigner,
    load_private_key,
    parse_witnesses,
)


class LogKey(DependencyProvider):
    """Injects the ``LogSigner``; a service without a valid key refuses to start.

    A log that cannot sign cannot promise anything, so a missing or broken
    key is a start-up error naming the setting, not a failure at the first
    checkpoint.
    """

    def setup(self) -> None:
        config = self.container.config
        secret = str(config.get("DISCLOSURE_SIGNING_KEY") or "")
        if not secret:
            raise RuntimeError(
                "DISCLOSURE_SIGNING_KEY (SHEQU_DISCLOSURE_SIGNING_KEY) is not set: "
                "create one with `shequ disclosure keygen`"
            )
        try:
            self.signer = LogSigner(
                origin=str(config.get("DISCLOSURE_ORIGIN") or "shequ-dev/disclosure"),
                private_key=load_private_key(secret),
                witnesses=parse_witnesses(str(config.get("DISCLOSURE_WITNESSES") or "")),
            )
        except InvalidKey as exc:
            raise RuntimeError(f"disclosure key configuration: {exc}") from None

    def get_dependency(self, worker_ctx: object) -> LogSigner:
        return self.signer
