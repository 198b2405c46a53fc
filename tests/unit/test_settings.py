import pytest
from pydantic import ValidationError

from deeptrust.streams.config import KafkaSettings


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


def test_oauthbearer_oidc_and_a_key_password_reach_the_client_config(monkeypatch):
    monkeypatch.setenv("DEEPTRUST_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DEEPTRUST_KAFKA_SASL_MECHANISM", "OAUTHBEARER")
    monkeypatch.setenv("DEEPTRUST_KAFKA_SASL_OAUTHBEARER_METHOD", "oidc")
    monkeypatch.setenv("DEEPTRUST_KAFKA_SASL_OAUTHBEARER_CLIENT_ID", "detect")
    monkeypatch.setenv("DEEPTRUST_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", "oidc-secret")
    monkeypatch.setenv(
        "DEEPTRUST_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL", "https://idp.example/token"
    )
    monkeypatch.setenv("DEEPTRUST_KAFKA_SASL_OAUTHBEARER_SCOPE", "kafka")
    monkeypatch.setenv("DEEPTRUST_KAFKA_SSL_KEY_LOCATION", "/etc/kafka/client.key")
    monkeypatch.setenv("DEEPTRUST_KAFKA_SSL_KEY_PASSWORD", "key-pass")
    settings = KafkaSettings()
    config = settings.client_config()
    assert {k: v for k, v in config.items() if k.startswith(("sasl.", "ssl."))} == {
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.client.id": "detect",
        "sasl.oauthbearer.client.secret": "oidc-secret",
        "sasl.oauthbearer.token.endpoint.url": "https://idp.example/token",
        "sasl.oauthbearer.scope": "kafka",
        "ssl.key.location": "/etc/kafka/client.key",
        "ssl.key.password": "key-pass",
    }
    assert "oidc-secret" not in repr(settings)
    assert "key-pass" not in repr(settings)


def test_other_librdkafka_options_pass_through(monkeypatch):
    monkeypatch.setenv(
        "DEEPTRUST_KAFKA_LIBRDKAFKA",
        '{"socket.keepalive.enable": "true", "ssl.endpoint.identification.algorithm": "none"}',
    )
    config = KafkaSettings().client_config()
    assert config["socket.keepalive.enable"] == "true"
    assert config["ssl.endpoint.identification.algorithm"] == "none"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('{"sasl.password": "x"}', "DEEPTRUST_KAFKA_SASL_PASSWORD"),
        ('{"isolation.level": "read_uncommitted"}', "exactly-once"),
        ('{"transactional.id": "mine"}', "exactly-once"),
    ],
)
def test_the_pass_through_cannot_shadow_a_setting_or_the_guarantee(monkeypatch, options, message):
    monkeypatch.setenv("DEEPTRUST_KAFKA_LIBRDKAFKA", options)
    with pytest.raises(ValidationError, match=message):
        KafkaSettings()


def test_plaintext_is_the_default():
    assert KafkaSettings().client_config()["security.protocol"] == "PLAINTEXT"


def test_model_options_reach_every_spec_and_task_keys_win(monkeypatch):
    from deeptrust.processors.settings import ProcessorSettings

    monkeypatch.setenv("DEEPTRUST_DETECT_BACKEND", "hf-vit")
    monkeypatch.setenv("DEEPTRUST_MODEL_THREADS", "3")
    monkeypatch.setenv(
        "DEEPTRUST_MODEL_OPTIONS",
        '{"path": "/models/vit", "device": "cuda", "max_batch": 16,'
        ' "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],'
        ' "caption": {"path": "/models/blip", "max_new_tokens": 20}}',
    )
    settings = ProcessorSettings()
    detect = settings.model_spec("detect")
    assert detect.backend == "hf-vit"
    assert detect.options == {
        "intra_op_threads": "3",
        "path": "/models/vit",
        "device": "cuda",
        "max_batch": "16",
        "providers": '["CUDAExecutionProvider", "CPUExecutionProvider"]',
    }
    caption = settings.model_spec("caption").options
    assert caption["path"] == "/models/blip"
    assert caption["max_new_tokens"] == "20"
    assert caption["device"] == "cuda"
    monkeypatch.delenv("DEEPTRUST_MODEL_OPTIONS")
    assert ProcessorSettings().model_spec("embed").options == {"intra_op_threads": "3"}


def test_model_artefacts_have_their_own_size_limit_above_the_upload_limit(monkeypatch, tmp_path):
    import pytest

    from deeptrust.processors.settings import ProcessorSettings
    from deeptrust.streams.errors import InvalidInput

    monkeypatch.setenv("DEEPTRUST_OBJECT_STORE_ROOT", str(tmp_path))
    monkeypatch.setenv("DEEPTRUST_MAX_IMAGE_BYTES", "1000")
    monkeypatch.setenv("DEEPTRUST_MODEL_MAX_BYTES", "5000")
    settings = ProcessorSettings()
    model = settings.model_store().put("models/vit/a.tar.gz", b"x" * 3000)
    assert settings.model_store().get(model.uri) == b"x" * 3000
    with pytest.raises(InvalidInput, match="object_too_large"):
        settings.object_store().get(model.uri)
    huge = settings.model_store().put("models/vit/b.tar.gz", b"x" * 6000)
    with pytest.raises(InvalidInput, match="object_too_large"):
        settings.model_store().get(huge.uri)
