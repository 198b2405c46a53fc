"""A small client for OpenAI-compatible completion servers (vLLM, llama.cpp's server).

A batch of prompts is sent as concurrent requests, so the server's own continuous
batching sees them together; each request has a timeout, and a failed or timed-out
request fails the whole batch, which the stage runner retries with backoff (a model
server that is down is transient trouble, not bad input). ``api="chat"`` wraps each
prompt as one user message for instruction models; ``api="completions"`` sends raw text
for base models prompted few-shot.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Api = Literal["completions", "chat"]


class LLMSettings(BaseSettings):
    """Where the language model is served (``DEEPTRUST_LLM_*``)."""

    model_config = SettingsConfigDict(env_prefix="DEEPTRUST_LLM_")

    base_url: str = "http://127.0.0.1:8081/v1"
    model: str = "gemma-3-270m"
    api: Api = "completions"
    api_key: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    max_concurrency: int = Field(default=8, ge=1)
    max_tokens: int = Field(default=48, ge=1)


class LLMError(RuntimeError):
    """The server did not answer a request properly."""


@dataclass
class CompletionClient:
    """Completes batches of prompts against one server and model."""

    settings: LLMSettings
    _http: httpx.Client | None = field(default=None, init=False, repr=False)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)

    def open(self) -> None:
        """Open the connection pool."""
        headers = (
            {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        )
        limits = httpx.Limits(max_connections=self.settings.max_concurrency)
        self._http = httpx.Client(
            base_url=self.settings.base_url,
            headers=headers,
            timeout=self.settings.timeout_s,
            limits=limits,
        )
        self._pool = ThreadPoolExecutor(self.settings.max_concurrency, "llm")

    def close(self) -> None:
        """Release connections and threads."""
        if self._http is not None:
            self._http.close()
        if self._pool is not None:
            self._pool.shutdown()
        self._http = self._pool = None

    def models(self) -> list[str]:
        """The model ids the server offers (also a cheap readiness check)."""
        response = self._client().get("/models")
        _raise_for(response)
        return [str(entry["id"]) for entry in response.json()["data"]]

    def complete(
        self, prompts: Sequence[str], stop: Sequence[str] = (), max_tokens: int | None = None
    ) -> list[str]:
        """Return one completion per prompt, in order (greedy decoding, reproducible)."""
        assert self._pool is not None, "open() not called"
        tokens = max_tokens or self.settings.max_tokens
        return list(self._pool.map(lambda p: self._one(p, list(stop), tokens), prompts))

    def _one(self, prompt: str, stop: list[str], max_tokens: int) -> str:
        body: dict[str, Any] = {
            "model": self.settings.model,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "seed": 0,
        }
        if stop:
            body["stop"] = stop
        if self.settings.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
            response = self._client().post("/chat/completions", json=body)
        else:
            body["prompt"] = prompt
            response = self._client().post("/completions", json=body)
        _raise_for(response)
        choice = response.json()["choices"][0]
        text = choice["message"]["content"] if self.settings.api == "chat" else choice["text"]
        return str(text or "")

    def _client(self) -> httpx.Client:
        assert self._http is not None, "open() not called"
        return self._http


def _raise_for(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise LLMError(
            f"{response.request.url}: HTTP {response.status_code}: {response.text[:300]}"
        )
