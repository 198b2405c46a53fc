"""Connection settings for Kafka, read once in ``main()`` and passed down.

Every command takes its bootstrap servers and security settings from the environment
(``DEEPTRUST_KAFKA_*``), so the same code talks to the local broker or to a production
cluster with SASL and TLS.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]

NAMED = {
    "bootstrap.servers": "bootstrap_servers",
    "security.protocol": "security_protocol",
    "client.id": "client_id",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "ssl.ca.location": "ssl_ca_location",
    "ssl.certificate.location": "ssl_certificate_location",
    "ssl.key.location": "ssl_key_location",
    "ssl.key.password": "ssl_key_password",
    "sasl.oauthbearer.method": "sasl_oauthbearer_method",
    "sasl.oauthbearer.client.id": "sasl_oauthbearer_client_id",
    "sasl.oauthbearer.client.secret": "sasl_oauthbearer_client_secret",
    "sasl.oauthbearer.token.endpoint.url": "sasl_oauthbearer_token_endpoint_url",
    "sasl.oauthbearer.scope": "sasl_oauthbearer_scope",
    "sasl.oauthbearer.extensions": "sasl_oauthbearer_extensions",
}
"""librdkafka options a setting of this class names: the pass-through may not set them."""
RUNTIME_OWNED = frozenset(
    {
        "group.id",
        "group.instance.id",
        "transactional.id",
        "transaction.timeout.ms",
        "isolation.level",
        "enable.idempotence",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "acks",
    }
)
"""What the exactly-once guarantee rests on (streams/exactly_once.py): never overridden."""


class KafkaSettings(BaseSettings):
    """Where the cluster is, how to authenticate, and which topic set to use."""

    model_config = SettingsConfigDict(env_prefix="DEEPTRUST_KAFKA_")

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "deeptrust."
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    sasl_oauthbearer_method: Literal["default", "oidc"] | None = None
    """``oidc``: librdkafka fetches tokens from ``sasl_oauthbearer_token_endpoint_url`` with
    the client credentials below (KIP-768)."""
    sasl_oauthbearer_client_id: str | None = None
    sasl_oauthbearer_client_secret: SecretStr | None = None
    sasl_oauthbearer_token_endpoint_url: str | None = None
    sasl_oauthbearer_scope: str | None = None
    sasl_oauthbearer_extensions: str | None = None
    client_id: str = "deeptrust"
    librdkafka: dict[str, str | int | float | bool] = Field(default_factory=dict, repr=False)
    """Any other librdkafka option, passed through as given
    (``DEEPTRUST_KAFKA_LIBRDKAFKA='{"socket.keepalive.enable": "true"}'``); not the ones a
    setting above names, nor the ones exactly-once rests on."""

    @field_validator("librdkafka")
    @classmethod
    def _not_named_or_owned(
        cls, options: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        named = sorted(key for key in options if key in NAMED)
        if named:
            hint = ", ".join(f"{key} (DEEPTRUST_KAFKA_{NAMED[key].upper()})" for key in named)
            raise ValueError(f"set these with their own settings: {hint}")
        owned = sorted(key for key in options if key in RUNTIME_OWNED)
        if owned:
            raise ValueError(f"DeepTrust sets these itself (exactly-once): {', '.join(owned)}")
        return options

    def client_config(self) -> dict[str, str | int | float | bool]:
        """Return the librdkafka settings shared by producers, consumers and admin clients."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        for option, field in NAMED.items():
            value = getattr(self, field)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is not None and option not in config:
                config[option] = value
        config.update(self.librdkafka)
        return config
