"""Text datasets for language models: the python-docs corpus (split by page, byte windows) and
WikiText-2 raw from disk (articles at `` = Title = `` headings; what is missing is named)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from b2s_bench import UserError
from b2s_bench.sources import LoadedModel

from b2s_bench_plugins.data import imagenet, text, wikitext  # isort: skip
from helpers import fake_pydoc  # isort: skip


def byte_model(context: int = 16) -> LoadedModel:
    return LoadedModel(torch.nn.Identity(), (context,), 256, "test-bytes", text.BYTES, input_vocab=256)


def test_the_split_is_by_page_fixed_and_about_a_tenth() -> None:
    names = [f"library/mod{i}.rst.txt" for i in range(2000)]
    test = [n for n in names if text.is_test(n)]
    assert 0.07 < len(test) / len(names) < 0.13
    assert test == [n for n in names if text.is_test(n)]  # no random state: the same pages every time
    docs = [text.Document(n, "x") for n in names]
    assert {d.name for d in text.split_documents(docs, "test")} == set(test)
    assert not {d.name for d in text.split_documents(docs, "train")} & set(test)


def test_windows_predict_the_next_byte_within_a_document_and_drop_short_tails() -> None:
    docs = [text.Document("a", "abcdefghij"), text.Document("b", "xy"), text.Document("c", "0123456")]
    w = text.windows(docs, text.byte_tokens, 3)
    # "abcdefghij": 3 windows (the 10th byte only as a target), "xy": none, "0123456": 2 windows
    assert w.doc.tolist() == [0, 0, 0, 2, 2]
    assert bytes(w.inputs[0].tolist()) == b"abc" and bytes(w.targets[0].tolist()) == b"bcd"
    assert bytes(w.inputs[2].tolist()) == b"ghi" and bytes(w.targets[2].tolist()) == b"hij"
    assert bytes(w.inputs[4].tolist()) == b"345" and bytes(w.targets[4].tolist()) == b"456"
    assert text.spread(10, 4).tolist() == [0, 2, 5, 7] and text.spread(3, None).tolist() == [0, 1, 2]
    with pytest.raises(UserError, match="lower `length`"):
        text.windows(docs[1:2], text.byte_tokens, 3)


def test_python_docs_loads_windows_clustered_by_page_and_calibrates_on_train_pages(tmp_path: Path) -> None:
    root = fake_pydoc(tmp_path / "_sources")
    config = text.PyDocConfig(root=str(root), length=16, limit=30)
    assert text.SPEC.problems is not None and text.SPEC.problems(config) == []
    data = text.SPEC.build(config, byte_model())
    test_pages = [d for d in text.pydoc_documents(root) if text.is_test(d.name)]
    assert test_pages, "the fake corpus has test pages"
    batches = list(data.eval_batches(8))
    inputs = torch.cat([x for x, _ in batches])
    targets = torch.cat([y for _, y in batches if y is not None])
    assert inputs.dtype == torch.int64 and inputs.shape == (data.num_examples, 16) == targets.shape
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    assert data.num_examples == 30 and data.clusters is not None and data.clusters.shape == (30,)
    assert len(np.unique(data.clusters)) > 1 and (np.diff(data.clusters) >= 0).all()  # page by page, spread over pages
    for row, page in zip(inputs, data.clusters):  # each window lies in the test page its cluster names
        assert bytes(row.tolist()) in test_pages[page].text.encode()
    test_bytes = b"".join(d.text.encode() for d in test_pages)
    assert data.calibration is not None
    cal = data.calibration(5)
    assert cal.dtype == torch.int64 and cal.shape == (5, 16) and torch.equal(cal, data.calibration(5))
    assert not any(bytes(row.tolist()) in test_bytes for row in cal)  # train pages only
    assert data.training is not None
    x, y = data.training()[0]
    assert torch.equal(x[:, 1:], y[:, :-1])
    # a window longer than the model's context, and a model without a tokenizer, are refused with the fix
    with pytest.raises(UserError, match="set `length: 8`"):
        text.SPEC.build(config, byte_model(context=8))
    with pytest.raises(UserError, match="language model"):
        text.SPEC.build(config, LoadedModel(torch.nn.Identity(), (1, 28, 28), 10, "cnn", "fashion-mnist"))
    (missing,) = text.SPEC.problems(text.PyDocConfig(root=str(tmp_path / "none")))
    assert "apt-get install python3-doc" in missing


#: the raw files' layout: headings keep a space after the last "=", blank lines hold one space
WIKI = "\n".join(
    [
        "",
        " = Valkyria Chronicles III = ",
        "",
        " Senjō no Valkyria 3 is a tactical role @-@ playing video game .",
        " ",
        " = = Gameplay = = ",
        "",
        " The game 's battle system is the same as in the previous games .",
        "",
        " = Tower Building of the Little Rock Arsenal = ",
        "",
        " The Tower Building is a structure in Little Rock , Arkansas .",
        " = = History = = ",
        " It was built in 1840 .",
        "",
    ]
)


def write_wikitext(root: Path, train: bool = True) -> Path:
    folder = root / "wikitext-2-raw-v1"
    folder.mkdir(parents=True)
    (folder / "wiki.test.raw").write_text(WIKI)
    if train:
        (folder / "wiki.train.raw").write_text(WIKI.upper())  # no lower-case letter: tells train from test
    return folder


def test_wikitext_articles_start_at_top_level_headings() -> None:
    docs = wikitext.articles(WIKI)
    assert [d.name for d in docs] == ["Valkyria Chronicles III", "Tower Building of the Little Rock Arsenal"]
    assert "= = Gameplay = =" in docs[0].text and "battle system" in docs[0].text
    assert docs[1].text.startswith(" = Tower Building") and "1840" in docs[1].text


def test_wikitext_from_data_root_with_the_models_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_wikitext(tmp_path)
    monkeypatch.setenv(imagenet.OVERRIDE_ENV, str(tmp_path))  # what --data ROOT sets
    config = wikitext.WikiTextConfig(length=16)
    assert wikitext.SPEC.problems is not None and wikitext.SPEC.problems(config) == []
    assert wikitext.SPEC.origin is not None and wikitext.SPEC.origin(config) == str(tmp_path.resolve())
    model = byte_model()
    model.data_config = {"tokenize": lambda s: [ord(c) % 256 for c in s if c != " "]}  # a tokenizer of its own
    data = wikitext.SPEC.build(config, model)
    assert data.clusters is not None and set(data.clusters.tolist()) == {0, 1}
    x, y = next(iter(data.eval_batches(100)))
    assert y is not None and int(x[0, 0]) == ord("=") and torch.equal(x[:, 1:], y[:, :-1])
    assert data.calibration is not None
    cal = data.calibration(2)
    assert cal.shape == (2, 16) and not any(ord("a") <= int(t) <= ord("z") for t in cal.flatten())  # the train file


def test_wikitext_missing_files_are_named_with_where_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(imagenet.OVERRIDE_ENV, raising=False)
    monkeypatch.delenv("B2S_WIKITEXT", raising=False)
    assert wikitext.SPEC.problems is not None
    (none,) = wikitext.SPEC.problems(wikitext.WikiTextConfig())
    assert "WikiText-2 not found" in none and "--data ROOT" in none and "wiki.test.raw" in none
    write_wikitext(tmp_path, train=False)
    (train,) = wikitext.SPEC.problems(wikitext.WikiTextConfig(root=str(tmp_path)))
    assert "lacks wiki.train.raw" in train
    with pytest.raises(UserError, match="WikiText-2 not found"):
        wikitext.SPEC.build(wikitext.WikiTextConfig(root=str(tmp_path / "elsewhere"), length=16), byte_model())
