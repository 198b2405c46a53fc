"""The LLM-backed tagger and captioner against a real OpenAI-compatible server.

The server is llama.cpp's, running Gemma 3 270M from its PyPI package: the same protocol
the stages speak to vLLM in production.
"""

from pathlib import Path

import httpx
import pytest
from PIL import Image

from deeptrust.devtools.llm_server import MODEL_ALIAS, LocalLLMServer
from deeptrust.devtools.local_broker import free_port
from deeptrust.processors.llm.client import CompletionClient, LLMSettings
from deeptrust.processors.llm.models import LabelCaptioner, LLMTagger
from deeptrust.processors.models import ModelSpec
from tests.images import SAMPLES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    local = LocalLLMServer(tmp_path_factory.mktemp("llm"), port=free_port())
    local.start(timeout_s=180)
    yield local
    local.stop()


@pytest.fixture
def settings(server):
    return LLMSettings(base_url=server.base_url, model=MODEL_ALIAS, timeout_s=60)


def test_server_offers_the_packaged_model(settings):
    client = CompletionClient(settings)
    client.open()
    try:
        assert client.models() == [MODEL_ALIAS]
    finally:
        client.close()


def test_tagger_tags_captions_with_their_content_words(settings):
    tagger = LLMTagger(ModelSpec("tag", "llm", "llm"), settings)
    tagger.load()
    espresso, astronaut = tagger.predict(
        ["A cup of espresso on a saucer.", "An astronaut in a white space suit holding a flag."]
    )
    assert "espresso" in espresso
    assert {"astronaut", "flag"} <= set(astronaut)
    assert tagger.spec.label == f"llm/{MODEL_ALIAS}"


def test_captioner_words_what_the_classifier_saw(settings):
    captioner = LabelCaptioner(ModelSpec("caption", "labels-llm", "labels-llm"), settings)
    captioner.load()
    photos = [
        Image.open(Path(SAMPLES) / name).convert("RGB") for name in ("chelsea.png", "coffee.jpg")
    ]
    cat, coffee = captioner.predict(photos)
    assert "cat" in cat.lower()
    assert "espresso" in coffee.lower() or "coffee" in coffee.lower()
    assert captioner.spec.label == f"labels-llm/mobilenet-v2 labels + {MODEL_ALIAS}"


def test_a_server_that_is_too_slow_fails_the_batch(settings):
    client = CompletionClient(settings.model_copy(update={"timeout_s": 0.001}))
    client.open()
    try:
        with pytest.raises(httpx.TimeoutException):
            client.complete(["Caption: a dog\nTags:"])
    finally:
        client.close()


def test_a_missing_server_fails_at_load_not_mid_stream():
    absent = LLMSettings(base_url=f"http://127.0.0.1:{free_port()}/v1", timeout_s=2)
    with pytest.raises(httpx.ConnectError):
        LLMTagger(ModelSpec("tag", "llm", "llm"), absent).load()
