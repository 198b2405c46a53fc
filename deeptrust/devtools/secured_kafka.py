"""What a secured local broker needs: a CA and a broker certificate, SCRAM users, ACLs.

The broker (:class:`deeptrust.devtools.local_broker.LocalBroker` with a
:class:`BrokerSecurity`) listens for clients on SASL_SSL only: TLS with a certificate
signed by a CA made here by ``openssl``, SCRAM-SHA-512 logins, and Kafka's
``StandardAuthorizer`` denying whatever no ACL allows. The admin principal is a super user;
every other principal gets exactly the ACLs :func:`stage_acls` lists for it, the way a
platform team grants a stage its input, its outputs and the dead-letter topic.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from pydantic import SecretStr

from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.topics import Topic, TopicNames

MECHANISM: Final = "SCRAM-SHA-512"
ADMIN = "admin"


@dataclass(frozen=True)
class BrokerSecurity:
    """The broker's TLS files and its admin login, all under ``home``."""

    home: Path
    admin_password: str = "admin-secret"  # noqa: S105 - a loopback test broker's login

    @property
    def ca_certificate(self) -> Path:
        """The CA clients trust (``DEEPTRUST_KAFKA_SSL_CA_LOCATION``)."""
        return self.home / "ca.crt"

    @property
    def keystore(self) -> Path:
        """The broker's private key and certificate chain, PEM."""
        return self.home / "broker.pem"

    def prepare(self) -> None:
        """Make the CA and the broker's certificate (for 127.0.0.1) once."""
        if self.keystore.exists():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        ca_key, key, request = (
            self.home / "ca.key",
            self.home / "broker.key",
            self.home / "broker.csr",
        )
        certificate, extensions = self.home / "broker.crt", self.home / "san.cnf"
        extensions.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
        openssl = ["openssl"]
        _run(
            *openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=deeptrust-local-ca",
            "-keyout",
            str(ca_key),
            "-out",
            str(self.ca_certificate),
        )
        _run(
            *openssl,
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(request),
        )
        _run(
            *openssl,
            "x509",
            "-req",
            "-in",
            str(request),
            "-CA",
            str(self.ca_certificate),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "30",
            "-out",
            str(certificate),
            "-extfile",
            str(extensions),
        )
        pkcs8 = self.home / "broker.pk8"
        _run(*openssl, "pkcs8", "-topk8", "-nocrypt", "-in", str(key), "-out", str(pkcs8))
        self.keystore.write_text(
            pkcs8.read_text() + certificate.read_text() + self.ca_certificate.read_text()
        )

    def listener_properties(self, port: int, controller_port: int) -> dict[str, str]:
        """What replaces the PLAINTEXT client listener: SASL_SSL, SCRAM, the authorizer."""
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{self.admin_password}";'
        )
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": MECHANISM,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_certificate),
            "ssl.client.auth": "none",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # The controller listener is loopback PLAINTEXT inside one process: its
            # principal is ANONYMOUS, which must be allowed to run the cluster.
            "super.users": f"User:{ADMIN};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def format_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create the admin's SCRAM credential."""
        return ["--add-scram", f"{MECHANISM}=[name={ADMIN},password={self.admin_password}]"]

    def settings(self, bootstrap: str, user: str, password: str, **fields: Any) -> KafkaSettings:
        """Client settings for ``user`` on this broker."""
        return KafkaSettings(
            bootstrap_servers=bootstrap,
            security_protocol="SASL_SSL",
            sasl_mechanism=MECHANISM,
            sasl_username=user,
            sasl_password=SecretStr(password),
            ssl_ca_location=str(self.ca_certificate),
            **fields,
        )

    def admin_settings(self, bootstrap: str, **fields: Any) -> KafkaSettings:
        """The super user's client settings."""
        return self.settings(bootstrap, ADMIN, self.admin_password, **fields)


@dataclass(frozen=True)
class Grant:
    """One ACL: an operation on a resource (a topic, group or transactional id)."""

    resource: ResourceType
    name: str
    operation: AclOperation
    prefixed: bool = False


def stage_acls(
    topics: TopicNames, group: str, reads: list[Topic], writes: list[Topic]
) -> list[Grant]:
    """What a stage may do, and nothing more.

    Read its inputs, write its outputs and the dead-letter topic, join its group, and run
    transactions under its group's name.
    """
    grants = [Grant(ResourceType.TOPIC, topics(topic), AclOperation.READ) for topic in reads]
    grants += [
        Grant(ResourceType.TOPIC, topics(topic), AclOperation.WRITE)
        for topic in [*writes, Topic.DEAD_LETTERS]
    ]
    grants += [
        Grant(ResourceType.GROUP, group, AclOperation.READ),
        Grant(ResourceType.TRANSACTIONAL_ID, group, AclOperation.WRITE, prefixed=True),
        Grant(ResourceType.TRANSACTIONAL_ID, group, AclOperation.DESCRIBE, prefixed=True),
    ]
    return grants


def add_principal(admin: KafkaSettings, user: str, password: str, grants: list[Grant]) -> None:
    """Create ``user``'s SCRAM credential and grant it exactly ``grants``."""
    client = AdminClient(admin.client_config())
    credential = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password.encode()
    )
    for future in client.alter_user_scram_credentials([credential]).values():
        future.result(30)
    bindings = [
        AclBinding(
            grant.resource,
            grant.name,
            ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL,
            f"User:{user}",
            "*",
            grant.operation,
            AclPermissionType.ALLOW,
        )
        for grant in grants
    ]
    for future in client.create_acls(bindings).values():
        try:
            future.result(30)
        except KafkaException as error:
            raise RuntimeError(f"cannot grant {user} its ACLs: {error}") from error


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} {command[1]} failed:\n{result.stderr}")
