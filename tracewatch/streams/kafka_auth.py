"""The worker's faust clients get the same Kafka security settings as every other client.

confluent-kafka takes librdkafka properties (``KafkaSettings.client_config``);
faust (aiokafka underneath) takes a credentials object and an ``ssl.SSLContext``
instead. Both are built from the same ``TRACEWATCH_KAFKA_*`` settings, so a
secured cluster needs no second configuration for the worker's stats agent.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
from faust.types.auth import CredentialsT

from tracewatch.config import KafkaSettings
from tracewatch.errors import ConfigError

__all__ = ["faust_credentials", "ssl_context"]

#: what librdkafka uses when ``sasl.mechanism`` is not set
_LIBRDKAFKA_DEFAULT_MECHANISM = "GSSAPI"
_PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def faust_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """faust's ``broker_credentials`` for ``kafka.security_protocol`` (None for PLAINTEXT)."""
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(kafka) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    mechanism = (kafka.sasl_mechanism or _LIBRDKAFKA_DEFAULT_MECHANISM).upper()
    if mechanism in _PASSWORD_MECHANISMS:
        password = kafka.sasl_password
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=None if password is None else password.get_secret_value(),
            ssl_context=context,
            mechanism=mechanism,
        )
    if mechanism == "GSSAPI":
        return faust.GSSAPICredentials(kerberos_service_name="kafka", ssl_context=context)
    raise ConfigError(
        f"TRACEWATCH_KAFKA_SASL_MECHANISM={mechanism} is not supported by the worker; "
        f"use one of {', '.join(_PASSWORD_MECHANISMS)} or GSSAPI"
    )


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """A TLS context from the ``ssl.*`` settings librdkafka reads (CA, client certificate)."""
    ca = kafka.ssl_ca_location
    try:
        if ca and Path(ca).is_dir():
            context = ssl.create_default_context(capath=ca)
        else:
            context = ssl.create_default_context(cafile=ca)
        if kafka.ssl_certificate_location:
            key_password = kafka.ssl_key_password
            context.load_cert_chain(
                kafka.ssl_certificate_location,
                kafka.ssl_key_location,
                password=None if key_password is None else key_password.get_secret_value(),
            )
    except (OSError, ssl.SSLError) as exc:  # the message names the file, never a password
        raise ConfigError(
            f"cannot load the Kafka TLS files (TRACEWATCH_KAFKA_SSL_CA_LOCATION, "
            f"_SSL_CERTIFICATE_LOCATION, _SSL_KEY_LOCATION): {exc}"
        ) from None
    return context
