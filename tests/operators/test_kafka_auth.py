import pytest

from operators.errors import ConfigError
from operators.kafka_auth import SHADED_SCRAM_LOGIN_MODULE, KafkaAuthConfig
from operators.settings import layered_knobs

SECRET = 'pa"ss\\word-123'


def auth(**env):
    return layered_knobs(KafkaAuthConfig, "kafka", {}, {f"STREAMREC_KAFKA_{k.upper()}": v for k, v in env.items()},
                         [])


def test_plaintext_by_default_adds_nothing():
    cfg = auth()
    assert cfg.connector_properties() == {"security.protocol": "PLAINTEXT"}
    assert cfg.python_client_config() == {}


def test_scram_over_tls_for_the_connector_and_the_python_clients(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = auth(security_protocol="SASL_SSL", username="job", password=SECRET, ssl_ca_file=str(ca))
    props = cfg.connector_properties()
    assert props["sasl.jaas.config"] == (f'{SHADED_SCRAM_LOGIN_MODULE} required username="job" '
                                         'password="pa\\"ss\\\\word-123";')
    assert props["ssl.truststore.type"] == "PEM" and props["ssl.truststore.location"] == str(ca)
    assert cfg.python_client_config()["sasl_plain_password"] == SECRET
    assert SECRET not in repr(cfg) and SECRET not in str(cfg) and SECRET not in cfg.describe()


def test_sasl_without_a_password_fails_with_the_fix_and_no_secret_is_echoed():
    with pytest.raises(ConfigError, match="STREAMREC_KAFKA_PASSWORD") as err:
        auth(security_protocol="SASL_SSL", username="job")
    with pytest.raises(ConfigError) as err:
        layered_knobs(KafkaAuthConfig, "kafka", {"kafka": {"password": SECRET}},
                      {"STREAMREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, [])
    assert SECRET not in str(err.value)
    with pytest.raises(ConfigError) as err:
        layered_knobs(KafkaAuthConfig, "kafka", {"kafka": {"password": 12345678}}, {}, ["username=x"])
    assert "12345678" not in str(err.value) and "**********" in str(err.value)


def test_a_missing_ca_file_fails_at_start(tmp_path):
    with pytest.raises(ConfigError, match="ssl_ca_file .* does not exist"):
        auth(security_protocol="SSL", ssl_ca_file=str(tmp_path / "nope.pem"))
