"""share: k-means weight sharing (Deep Compression): Lloyd with linear init, exact bits, the contract,
prune then share through the artifact, and the declared symbol streams."""

from __future__ import annotations

from pathlib import Path

import b2s_bench_plugins.compressors.prune as prune
import b2s_bench_plugins.compressors.quantize as quantize
import pytest
import torch
from b2s_bench_plugins.compressors.share import (
    SPEC,
    KeptFloatCode,
    ShareCode,
    ShareConfig,
    initial_centroids,
    kmeans_1d,
    share_tensor,
)

import b2s_bench as b2s
from b2s_bench import Compressed, ConfigError, Context, build_config
from b2s_bench.compression.codes import NestedCode
from b2s_bench.compression.contract import storage_problems, symbol_problems
from b2s_bench.execution.cell import apply_stage
from b2s_bench.fitting.solve import fit_network
from b2s_bench.testing import check_compressor, tiny_context, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _laplace(n: int, seed: int = 0) -> torch.Tensor:
    """Trained weights are roughly Laplacian: peaked at zero, with long tails."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g) - 0.5
    return -0.05 * torch.sign(u) * torch.log1p(-2 * u.abs())


def _config(**settings: object) -> ShareConfig:
    return build_config(ShareConfig, settings, "share")


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean())


# -- k-means ---------------------------------------------------------------------------------------------
def test_linear_init_spaces_centroids_evenly_between_min_and_max() -> None:
    x = _laplace(1000).double()
    c = initial_centroids(x, 8, "linear")
    assert float(c[0]) == float(x.min()) and float(c[-1]) == float(x.max())
    gaps = c[1:] - c[:-1]
    assert torch.allclose(gaps, gaps[0].expand_as(gaps))
    dense = initial_centroids(x, 8, "density")  # equal mass: packed near zero, unlike linear
    assert float(dense[-1] - dense[0]) < 0.5 * float(c[-1] - c[0])


@pytest.mark.parametrize("bits", [3, 4, 5])
def test_kmeans_converges_and_beats_uniform_quantization_at_equal_levels(bits: int) -> None:
    w = _laplace(4096).reshape(64, 64)
    result = kmeans_1d(w, 2**bits, "linear", iterations=1000, tolerance=1e-6)
    assert result.converged and result.iterations < 1000
    # a fixed point of Lloyd: every centroid is the mean of its cluster, every weight at its nearest centroid
    x = w.reshape(-1).double()
    for j in torch.unique(result.assignment):
        assert torch.isclose(result.centroids[j], x[result.assignment == j].mean(), rtol=0, atol=1e-12)
    nearest = (x[:, None] - result.centroids[None, :]).abs().argmin(dim=1)
    assert torch.equal(result.centroids[nearest], result.centroids[result.assignment])

    code, facts = share_tensor("w", w, _config(bits=bits, iterations=1000, tolerance=1e-6), Context())
    assert facts["converged"]
    uniform = quantize.quantize_tensor(
        w, build_config(quantize.QuantizeConfig, {"bits": bits, "granularity": "tensor", "symmetric": False})
    )
    assert _mse(code.decode(), w) < 0.9 * _mse(uniform.decode(), w)


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_the_sorted_lloyd_takes_the_textbook_steps(steps: int) -> None:
    x = _laplace(3000, seed=4).double()
    centroids = initial_centroids(x, 16, "linear")
    for _ in range(steps):  # assign by an N x k distance matrix, move to the means, keep empty clusters
        labels = (x[:, None] - centroids[None, :]).abs().argmin(dim=1)
        counts = torch.bincount(labels, minlength=16)
        sums = torch.zeros(16, dtype=torch.float64).index_add_(0, labels, x)
        centroids = torch.sort(torch.where(counts > 0, sums / counts.clamp(min=1), centroids)).values
    result = kmeans_1d(x, 16, "linear", iterations=steps, tolerance=-1.0)
    assert result.iterations == steps
    assert torch.allclose(result.centroids, centroids, rtol=0, atol=1e-12)
    assert torch.equal(result.assignment, (x[:, None] - centroids[None, :]).abs().argmin(dim=1))


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_every_init_reaches_a_local_minimum(init: str) -> None:
    w = _laplace(2048, seed=1)
    code, facts = share_tensor("w", w, _config(bits=4, init=init, iterations=2000, tolerance=0.0), Context(seed=3))
    assert facts["converged"]  # tolerance 0: stopped because no assignment changed
    uniform = quantize.quantize_tensor(
        w, build_config(quantize.QuantizeConfig, {"bits": 4, "granularity": "tensor", "symmetric": False})
    )
    assert _mse(code.decode(), w) < _mse(uniform.decode(), w)


def test_the_iteration_budget_is_kept_and_reported() -> None:
    code, facts = share_tensor("w", _laplace(4096), _config(bits=6, iterations=2, tolerance=0.0), Context())
    assert facts == {"iterations": 2, "converged": False, "zero_pinned": False}
    comp = SPEC.compress(tiny_model(0), _config(bits=6, iterations=2, tolerance=0.0), Context())
    assert comp.info["unconverged"] == sorted(comp.codes)


def test_the_network_form_fitted_from_random_reaches_the_cluster_means() -> None:
    w = _laplace(2048, seed=2)
    code, _ = share_tensor("w", w, _config(bits=3, iterations=1000, tolerance=0.0), Context())
    net = code.as_network("random", torch.Generator().manual_seed(0))
    assert net.solution == "local search" and not net.closed_form
    fit_network(net, w, steps=1500, lr=0.05)
    # least squares with the indices fixed puts every shared value at its cluster's mean: Lloyd's update,
    # and k-means stopped at a fixed point of it
    used = torch.unique(code.indices)
    assert torch.allclose(net.codebook.detach()[used], code.codebook[used], rtol=0, atol=1e-4 * float(w.abs().max()))


# -- exact bits and symbols --------------------------------------------------------------------------------
@pytest.mark.parametrize(("bits", "codebook_bits"), [(1, 32), (5, 32), (8, 16)])
def test_exact_bits(bits: int, codebook_bits: int) -> None:
    w = _laplace(3 * 5 * 7 * 11).reshape(3, 5, 7, 11)
    code, _ = share_tensor("w", w, _config(bits=bits, codebook_bits=codebook_bits), Context())
    size = code.bits()
    header = b2s.header_bits({"nbits": bits, "codebook_bits": codebook_bits, "shape": [3, 5, 7, 11]})
    assert (size.payload, size.codebook, size.metadata) == (w.numel() * bits, 2**bits * codebook_bits, header)
    assert size.total == w.numel() * bits + 2**bits * codebook_bits + header == 1155 * bits + 2**bits * codebook_bits + 6 * 32
    tensors = code.tensors()
    assert tensors["indices"].numel() == -(-w.numel() * bits // 8)  # packed: padding of the last byte only
    assert tensors["codebook"].dtype == (torch.float16 if codebook_bits == 16 else torch.float32)
    assert storage_problems({"w": code}) == []
    assert torch.unique(code.decode()).numel() <= 2**bits


def test_symbols_are_the_stored_indices() -> None:
    code, _ = share_tensor("w", _laplace(999), _config(bits=5), Context())
    ((name, sym),) = code.symbols().items()
    assert (name, sym.width, sym.part) == ("indices", 5, "payload")
    assert symbol_problems("w", code) == []
    assert torch.equal(code.codebook[sym.values], code.decode().reshape(-1))  # they decode to the weights
    liar = ShareCode(code.indices, code.codebook, code.nbits, code.codebook_bits, code.orig_shape)
    liar.symbols = lambda: {"indices": b2s.Symbols(code.indices, 6, "payload")}  # type: ignore[method-assign]
    assert symbol_problems("w", liar)  # a wrong width would decode to other weights: the contract says so


def test_fp16_codebook_decodes_to_stored_values_and_round_trips(tmp_path: Path) -> None:
    comp = SPEC.compress(tiny_model(0), _config(bits=4, codebook_bits=16), Context())
    for code in comp.codes.values():
        assert isinstance(code, ShareCode)
        assert torch.equal(code.codebook, code.codebook.half().float())
    comp.save(str(tmp_path / "a"))
    loaded = Compressed.load(str(tmp_path / "a"), comp.skeleton, {ShareCode.kind: ShareCode})
    for key, value in comp.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


# -- the contract, layers and settings -------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings", [{}, {"bits": 2, "codebook_bits": 16, "init": "random"}, {"init": "density", "layer_bits": {"classifier.*": 3}}]
)
def test_contract(settings: dict) -> None:
    report = check_compressor(SPEC, settings)
    assert report.bits > 0 and report.coverage == 1.0


def test_layer_bits_and_min_numel_pick_the_layers() -> None:
    comp = SPEC.compress(tiny_model(0), _config(bits=8, layer_bits={"classifier.*": 5, "*": 6}, min_numel=200), Context())
    assert "features.0.weight" in comp.raw  # 144 weights: left raw
    assert {k: c.nbits for k, c in comp.codes.items()} == {
        "features.4.weight": 6,
        "classifier.1.weight": 5,
        "classifier.3.weight": 5,
    }
    assert _config(layer_bits={"classifier.*": 5}).bits_for("classifier.1.weight/values") == 5  # a later stage's name


def test_tensors_where_sharing_does_not_pay_stay_fp32(tmp_path: Path) -> None:
    # 144 weights: 144 * 8 + 256 * 32 bits of indices and codebook cost more than 144 * 32 at fp32
    comp = SPEC.compress(tiny_model(0), _config(bits=8), Context())
    assert "features.0.weight" in comp.raw and comp.info["kept_fp32"] == ["features.0.weight"]
    assert set(comp.codes) == {"features.4.weight", "classifier.1.weight", "classifier.3.weight"}
    small = SPEC.compress_tensor("w/values", _laplace(100), _config(bits=8), Context())
    assert isinstance(small, KeptFloatCode) and torch.equal(small.decode(), _laplace(100))
    assert small.bits().total == small.bits().payload == 3200
    under = SPEC.compress_tensor("w/values", _laplace(5000), _config(bits=2, min_numel=8000), Context())
    assert isinstance(under, KeptFloatCode)
    shared = SPEC.compress_tensor("w/values", _laplace(5000), _config(bits=2), Context())
    assert isinstance(shared, ShareCode) and shared.bits().total < 32 * 5000
    # in a pipeline: prune's kept values of the small conv stay fp32, the rest are shared; the artifact round-trips
    pruned = prune.SPEC.compress(tiny_model(0), build_config(prune.PruneConfig, {"sparsity": 0.5}), Context())
    staged = apply_stage(pruned, SPEC, _config(bits=8), Context())
    kinds = {k: type(c.inner["values"]) for k, c in staged.codes.items() if isinstance(c, NestedCode)}
    assert kinds["features.0.weight"] is KeptFloatCode and kinds["classifier.1.weight"] is ShareCode
    assert staged.codes["features.0.weight"].bits() == pruned.codes["features.0.weight"].bits()
    staged.save(str(tmp_path / "a"))
    loaded = Compressed.load(str(tmp_path / "a"), staged.skeleton, {c.kind: c for c in (*prune.SPEC.codes, *SPEC.codes)})
    for key, value in staged.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"bits": 9}, "bits"),
        ({"bits": 0}, "bits"),
        ({"layer_bits": {"classifier.*": 12}}, "layer_bits"),
        ({"init": "kmeans++"}, "init"),
        ({"iterations": 0}, "iterations"),
        ({"tolerance": -1.0}, "tolerance"),
        ({"codebook_bits": 8}, "codebook_bits"),
        ({"min_numel": -1}, "min_numel"),
        ({"finetune_epochs": -1}, "finetune_epochs"),
        ({"finetune_lr": 0.0}, "finetune_lr"),
        ({"finetune_batches": 0}, "finetune_batches"),
    ],
)
def test_bad_settings_name_the_key(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(**settings)
    assert err.value.key == key and key in str(err.value)


# -- Deep Compression: prune, then share the kept values -------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.8, 0.1])  # 0.1: prune stores tensors dense, zeros among its values
def test_prune_then_share_round_trips_through_the_artifact(tmp_path: Path, sparsity: float) -> None:
    model = tiny_model(0)
    pruned = prune.SPEC.compress(model, build_config(prune.PruneConfig, {"sparsity": sparsity}), Context())
    staged = apply_stage(pruned, SPEC, _config(bits=4), tiny_context(0))
    assert staged.info["stages"][-1]["compressor"] == "share"
    for key, code in staged.codes.items():
        assert isinstance(code, NestedCode) and set(code.inner) == {"values"}
        inner = code.inner["values"]
        assert isinstance(inner, ShareCode) and inner.nbits == 4
        assert {"iterations", "converged", "clusters_used"} <= set(inner.stats())  # the record says how k-means went
        outer = pruned.codes[key]
        # prune's fp32 payload is replaced by 4-bit indices and a 16-entry fp32 codebook; its indices stay
        expected = outer.bits().total - 32 * outer.values.numel() + inner.bits().total
        assert code.bits().total == expected
        assert inner.bits().payload == 4 * outer.values.numel()
        # pruned weights stay exactly zero (dense-stored ones through the pinned zero centroid)
        assert (code.decode()[outer.decode() == 0] == 0).all()
        assert symbol_problems(key, code) == []
    assert staged.size().total_bits < pruned.size().total_bits
    assert storage_problems(staged.codes) == []

    staged.save(str(tmp_path / "artifact"))
    kinds = {c.kind: c for c in (*prune.SPEC.codes, *SPEC.codes)}
    loaded = Compressed.load(str(tmp_path / "artifact"), staged.skeleton, kinds)
    assert loaded.size().total_bits == staged.size().total_bits
    for key, value in staged.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(staged.module()(x), loaded.module()(x))


def test_keep_zeros_pins_a_zero_centroid_only_where_zeros_are() -> None:
    w = _laplace(1000)
    w[::3] = 0.0
    pinned, facts = share_tensor("w", w, _config(bits=3), Context())
    assert facts["zero_pinned"] and 0.0 in pinned.codebook.tolist()
    assert (pinned.decode()[w == 0] == 0).all()
    free, facts = share_tensor("w", w, _config(bits=3, keep_zeros=False), Context())
    assert not facts["zero_pinned"] and not (free.decode()[w == 0] == 0).any()  # zeros moved to a cluster mean
    _, facts = share_tensor("w", _laplace(1000), _config(bits=3), Context())
    assert not facts["zero_pinned"]  # no exact zeros: all k centroids are fitted


# -- trained quantization (the training track) ------------------------------------------------------------
def _training_loss(comp: Compressed, ctx: Context) -> float:
    assert ctx.training is not None
    module = comp.module().eval()
    with torch.no_grad():
        return sum(float(torch.nn.functional.cross_entropy(module(x), y)) for x, y in ctx.training())


def test_finetune_moves_only_the_shared_values_and_lowers_the_training_loss() -> None:
    ctx = tiny_context(0)
    plain = SPEC.compress(tiny_model(0), _config(bits=3), ctx)
    tuned = SPEC.compress(tiny_model(0), _config(bits=3, finetune_epochs=3, finetune_lr=0.01), ctx)
    assert SPEC.track_for(_config(finetune_epochs=1)) == "training" and SPEC.track_for(_config()) == "data-free"
    assert tuned.info["data_track"] == "training" and tuned.info["finetune"]["steps"] == 12
    for key, code in tuned.codes.items():
        before = plain.codes[key]
        assert isinstance(code, ShareCode) and isinstance(before, ShareCode)
        assert torch.equal(code.indices, before.indices)  # the assignment stays k-means'
        assert not torch.equal(code.codebook, before.codebook)
        assert code.bits() == before.bits()  # the same bits: only the values moved
    for key, value in plain.raw.items():
        assert torch.equal(value, tuned.raw[key])
    assert _training_loss(tuned, ctx) < _training_loss(plain, ctx)


def test_finetune_keeps_the_pinned_zero_and_needs_training_data() -> None:
    model = tiny_model(0)
    with torch.no_grad():
        model.classifier[1].weight[:, ::2] = 0.0
    tuned = SPEC.compress(model, _config(bits=3, finetune_epochs=1, finetune_lr=0.01), tiny_context(0))
    code = tuned.codes["classifier.1.weight"]
    assert isinstance(code, ShareCode) and 0.0 in code.codebook.tolist()
    assert (code.decode()[:, ::2] == 0).all()
    with pytest.raises(ValueError, match="training split"):
        SPEC.compress(tiny_model(0), _config(finetune_epochs=1), tiny_context(0, with_data=False))
    # as a later stage, compress_tensor only shares (k-means): the pipeline's refine fine-tunes the whole model
    later = SPEC.compress_tensor("w/values", _laplace(100), _config(finetune_epochs=1), Context())
    plain = SPEC.compress_tensor("w/values", _laplace(100), _config(), Context())
    assert isinstance(later, ShareCode) and isinstance(plain, ShareCode)
    assert torch.equal(later.indices, plain.indices) and torch.equal(later.codebook, plain.codebook)


def test_contract_with_finetuning() -> None:
    assert check_compressor(SPEC, {"bits": 3, "finetune_epochs": 1, "finetune_batches": 2, "codebook_bits": 16}).bits > 0


def test_the_deep_compression_suite_is_the_papers_order() -> None:
    import yaml

    suite = yaml.safe_load((Path(__file__).resolve().parents[3] / "suites" / "deep-compression.yaml").read_text())
    assert [m["name"] for m in suite["models"]] == ["zoo:fmnist-cnn"] and suite["models"][0]["dataset"] == "fashion-mnist"
    pipelines = {e["label"]: e["pipeline"] for e in suite["compressors"] if "pipeline" in e}
    full = pipelines["deep compression"]
    assert [s["name"] for s in full] == ["prune", "share", "entropy"] and full[2]["coder"] == "huffman"
    assert pipelines["prune + share"] == full[:2]  # the same pipeline without Huffman coding
    share = full[1]
    config = _config(**{k: v for k, v in share.items() if k != "name"})  # the paper's 8-bit convs, 5-bit fc layers
    assert config.bits_for("features.4.weight/values") == 8 and config.bits_for("classifier.1.weight/values") == 5


def test_deep_compression_prune_share_huffman_round_trips(tmp_path: Path) -> None:
    import b2s_bench_plugins.compressors.entropy as entropy

    pruned = prune.SPEC.compress(tiny_model(0), build_config(prune.PruneConfig, {"sparsity": 0.8}), Context())
    shared = apply_stage(pruned, SPEC, _config(bits=5), Context())
    coded = apply_stage(shared, entropy.SPEC, build_config(entropy.EntropyConfig, {"coder": "huffman"}), Context())
    assert [s.get("compressor") for s in coded.info["stages"]][1:] == ["share", "entropy"]
    before, after = shared.state_dict(), coded.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # Huffman coding is lossless
    assert coded.size().total_bits < shared.size().total_bits
    assert storage_problems(coded.codes) == []
    coded.save(str(tmp_path / "a"))
    kinds = {c.kind: c for c in (*prune.SPEC.codes, *SPEC.codes, *entropy.SPEC.codes)}
    loaded = Compressed.load(str(tmp_path / "a"), coded.skeleton, kinds)
    assert loaded.size().total_bits == coded.size().total_bits
    assert all(torch.equal(after[k], loaded.state_dict()[k]) for k in after)
