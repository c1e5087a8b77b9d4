"""How the job and the tools authenticate to Kafka: ``[kafka]`` in the config file, ``STREAMREC_KAFKA_<KNOB>``
in the environment, ``--kafka KEY=VALUE`` on the command line (not the password: a command line is visible to
every user of the machine), validated by pydantic.

The password is a :class:`pydantic.SecretStr`: it prints as ``**********``, validation errors never echo it,
and it only leaves this module inside the JAAS line handed to the Kafka connector (whose own config dump
shows ``[hidden]``) and the kafka-python client settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = ["KafkaAuthConfig", "SHADED_SCRAM_LOGIN_MODULE"]

SHADED_SCRAM_LOGIN_MODULE = "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram.ScramLoginModule"
"""flink-sql-connector-kafka relocates the Kafka client: its JAAS login modules live under this prefix."""
_PLAIN_LOGIN_MODULE = "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.plain.PlainLoginModule"


class KafkaAuthConfig(BaseModel):
    """Security between the job (and the project's tools) and the brokers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (SCRAM over TLS: SASL_SSL)")
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism when the protocol is SASL_*")
    username: str | None = Field(None, description="SASL user name")
    password: SecretStr | None = Field(
        None, description="SASL password; set it with STREAMREC_KAFKA_PASSWORD or the config file, never on the "
                          "command line")
    ssl_ca_file: str | None = Field(
        None, description="PEM file of the CA that signed the brokers' certificates (default: the system's)")

    @model_validator(mode="after")
    def _complete(self) -> KafkaAuthConfig:
        if self.sasl and (not self.username or self.password is None or not self.password.get_secret_value()):
            msg = (f"security_protocol {self.security_protocol} needs username and password: set kafka.username "
                   "and the environment variable STREAMREC_KAFKA_PASSWORD (or [kafka] password in the config file)")
            raise ValueError(msg)
        if self.ssl_ca_file is not None:
            if not self.tls:
                msg = f"ssl_ca_file is only used with SSL or SASL_SSL, not {self.security_protocol}"
                raise ValueError(msg)
            if not Path(self.ssl_ca_file).is_file():
                msg = f"ssl_ca_file {self.ssl_ca_file} does not exist; give the CA certificate as a PEM file"
                raise ValueError(msg)
        return self

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    @property
    def tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def connector_properties(self) -> dict[str, str]:
        """Kafka client properties for the Flink connector (to prefix with ``properties.``)."""
        props = {"security.protocol": self.security_protocol}
        if self.sasl:
            module = _PLAIN_LOGIN_MODULE if self.sasl_mechanism == "PLAIN" else SHADED_SCRAM_LOGIN_MODULE
            props["sasl.mechanism"] = self.sasl_mechanism
            props["sasl.jaas.config"] = (f'{module} required username="{_jaas(self.username or "")}" '
                                         f'password="{_jaas(self.password.get_secret_value())}";')
        if self.tls and self.ssl_ca_file:
            props["ssl.truststore.type"] = "PEM"
            props["ssl.truststore.location"] = str(Path(self.ssl_ca_file).resolve())
        return props

    def python_client_config(self) -> dict[str, object]:
        """Settings for kafka-python clients (the project's producers, consumers and admin)."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        config: dict[str, object] = {"security_protocol": self.security_protocol}
        if self.sasl:
            config.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                          sasl_plain_password=self.password.get_secret_value())
        if self.tls and self.ssl_ca_file:
            config["ssl_cafile"] = str(Path(self.ssl_ca_file).resolve())
        return config

    def describe(self) -> str:
        """One line for logs: never the password."""
        who = f" as {self.username!r} ({self.sasl_mechanism})" if self.sasl else ""
        return f"{self.security_protocol}{who}"


def _jaas(value: str) -> str:
    """A JAAS option value inside double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"')
