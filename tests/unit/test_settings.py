from streams.config import KafkaSettings


def test_sasl_ssl_settings_reach_the_client_config(monkeypatch):
    monkeypatch.setenv("DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS", "broker-1:9093,broker-2:9093")
    monkeypatch.setenv("DEEPTRUST_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DEEPTRUST_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("DEEPTRUST_KAFKA_SASL_USERNAME", "deeptrust")
    monkeypatch.setenv("DEEPTRUST_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("DEEPTRUST_KAFKA_SSL_CA_LOCATION", "/etc/ssl/kafka-ca.pem")
    settings = KafkaSettings()
    assert settings.client_config() == {
        "bootstrap.servers": "broker-1:9093,broker-2:9093",
        "security.protocol": "SASL_SSL",
        "client.id": "deeptrust",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "deeptrust",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ssl/kafka-ca.pem",
    }
    assert "s3cret" not in repr(settings)


def test_plaintext_is_the_default():
    assert KafkaSettings().client_config()["security.protocol"] == "PLAINTEXT"
