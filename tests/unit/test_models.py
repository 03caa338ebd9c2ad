"""Every registered model: shapes, gradients, checkpoints, determinism and a few-batch overfit;
the RCNN's fast LRN and feed-forward-once unrolling against the paper's direct transcription."""

import copy
import importlib.util
import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from emnist.models import build_model, list_models
from emnist.models.rcnn import ReluLRN
from training.speed import cpp_compiler_problem, maybe_compile, prepare_for_training

NUM_CLASSES = 47
# (name, constructor arguments): every registered model with its defaults, plus variants.
CASES = [
    ("cnn-seed", {}),
    ("cnn", {}),
    ("rcnn", {"norm": "lrn"}),
    ("rcnn", {"norm": "bn"}),
]
# Expected parameter counts (1 input channel, 47 classes). RCNN-96 is about 0.67M in the paper.
PARAMETERS = {
    ("cnn-seed", ""): (0.9e6, 1.1e6),
    ("cnn", ""): (0.5e6, 1.5e6),
    ("rcnn", "lrn"): (0.66e6, 0.68e6),
    ("rcnn", "bn"): (0.66e6, 0.68e6),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny batches gain nothing from a second thread, and on cores shared with other jobs
    OpenMP's spinning barriers made this file 15x slower (200 s instead of 13 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def case_id(case: tuple[str, dict]) -> str:
    name, kwargs = case
    return "-".join([name, *map(str, kwargs.values())])


def build(case, seed: int = 0, **overrides) -> torch.nn.Module:
    name, kwargs = case
    torch.manual_seed(seed)
    return build_model(name, num_classes=NUM_CLASSES, **kwargs, **overrides)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def strokes(n: int, seed: int = 0) -> torch.Tensor:
    """Images of three random 3-pixel-wide strokes each: distinguishable by shape, unlike
    uniform noise, whose global max-pool features hardly differ from image to image."""
    generator = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    out = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        for _ in range(3):
            start, end = torch.rand(2, 2, generator=generator) * 20 + 4
            step = end - start
            along = ((cols - start[0]) * step[0] + (rows - start[1]) * step[1]) / (step @ step)
            along = along.clamp(0, 1)
            dist = torch.hypot(cols - start[0] - along * step[0], rows - start[1] - along * step[1])
            out[i, 0] = torch.maximum(out[i, 0], (1.5 - dist).clamp(0, 1))
    return out


def load_benchmark():
    """benchmarks/train_throughput.py, which keeps the naive RCNN as the speed baseline."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "train_throughput.py"
    spec = importlib.util.spec_from_file_location("train_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cases_cover_every_registered_model():
    assert {name for name, _ in CASES} == set(list_models())


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(KeyError, match="unknown model 'resnet'; registered: cnn, cnn-seed, rcnn"):
        build_model("resnet", num_classes=NUM_CLASSES)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("cnn", {"width": 0}),
        ("cnn", {"dropout": 1.0}),
        ("cnn-seed", {"convs_per_block": 0}),
        ("rcnn", {"norm": "group"}),
        ("rcnn", {"steps": -1}),
        ("rcnn", {"num_classes": 1}),
    ],
)
def test_constructors_reject_invalid_arguments(name, kwargs):
    with pytest.raises(AssertionError, match="must"):
        build_model(name, **{"num_classes": NUM_CLASSES, **kwargs})


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_parameter_count(case):
    count = sum(p.numel() for p in build(case).parameters())
    low, high = PARAMETERS[case[0], case[1].get("norm", "")]
    print(f"{case_id(case)}: {count:,} parameters")
    assert low <= count <= high, f"{case_id(case)} has {count:,} parameters"


def test_rcnn96_parameter_count_is_the_papers():
    # conv1 5x5 (1 -> 96) + 4 RCLs x (two 3x3 96 -> 96 convs + one bias) + 96 -> 47 classifier.
    expected = (25 * 96 + 96) + 4 * (2 * 9 * 96 * 96 + 96) + (96 * 47 + 47)
    assert sum(p.numel() for p in build(("rcnn", {})).parameters()) == expected == 670_991


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_logits_shape_finite_and_gradients(case):
    model = build(case).train()
    logits = model(images(4))
    assert logits.shape == (4, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.arange(4)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_state_dict_round_trip_and_eval_determinism(case):
    model = build(case, seed=0).train()
    model(images(8))  # moves batch-norm running statistics off their initial values
    model.eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = build(case, seed=1)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    restored.eval()
    x = images(4, seed=1)
    with torch.inference_mode():
        first = model(x)
        assert torch.equal(first, model(x)), "eval mode is not deterministic"
        assert torch.equal(first, restored(x))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_overfits_a_tiny_batch(case):
    model = build(case, dropout=0.0).train()
    x = strokes(8, seed=2)
    y = torch.randint(0, NUM_CLASSES, (8,), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], f"loss {losses[0]:.2f} -> {losses[-1]:.2f}"


@pytest.mark.parametrize("channels", [8, 12, 96])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_lrn_matches_torch_local_response_norm(channels, channels_last):
    # 8 channels give an even window (2) whose asymmetry tests the band's orientation.
    lrn = ReluLRN(channels)
    z = 3 * torch.randn(4, channels, 5, 6, generator=torch.Generator().manual_seed(0))
    if channels_last:
        z = z.contiguous(memory_format=torch.channels_last)
    fast, ref = z.clone().requires_grad_(), z.clone().requires_grad_()
    grad = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
    out_fast = lrn(fast)
    out_ref = F.local_response_norm(F.relu(ref), lrn.size, lrn.alpha, lrn.beta, k=1.0)
    out_fast.backward(grad)
    out_ref.backward(grad)
    torch.testing.assert_close(out_fast, out_ref)
    torch.testing.assert_close(fast.grad, ref.grad)


@pytest.mark.parametrize("beta", [0.75, 0.5])
def test_fast_lrn_gradcheck(beta):
    lrn = ReluLRN(16, alpha=0.5, beta=beta)  # a large alpha makes the normalisation matter
    z = torch.randn(2, 16, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z = z + 0.1 * z.sign()  # keep away from ReLU's kink, where finite differences disagree
    assert torch.autograd.gradcheck(lrn, (z.requires_grad_(),))


@pytest.mark.parametrize("norm", ["lrn", "bn"])
def test_optimised_rcnn_matches_the_paper_transcription(norm):
    """Channels-last, feed-forward term computed once, fused ReLU+LRN: the same function as the
    direct transcription (NCHW, feed-forward recomputed per step, nn.LocalResponseNorm).

    Compared in float64: in float32 the two orders of summation differ by about 1e-6, enough
    to flip a ReLU gate sitting at zero and move single gradient entries by 1e-4.
    """
    reference_forward = load_benchmark().reference_rcnn_forward
    # No dropout: masks drawn for channels-last and NCHW tensors differ.
    fast = build(("rcnn", {"norm": norm}), dropout=0.0).double().train()
    fast = prepare_for_training(fast, "cpu")
    slow = build(("rcnn", {"norm": norm}), dropout=0.0).double().train()
    x, y = images(4, seed=3).double(), torch.arange(4)
    F.cross_entropy(logits_fast := fast(x), y).backward()
    F.cross_entropy(logits_slow := reference_forward(slow, x), y).backward()
    torch.testing.assert_close(logits_fast, logits_slow)
    slow_params = dict(slow.named_parameters())
    for name, p in fast.named_parameters():
        torch.testing.assert_close(
            p.grad, slow_params[name].grad, msg=lambda m, name=name: f"{name}: {m}"
        )
    torch.testing.assert_close(fast.state_dict(), slow.state_dict())  # BN running statistics


@pytest.mark.parametrize("norm", ["lrn", "bn"])
def test_optimised_rcnn_matches_in_float32(norm):
    reference_forward = load_benchmark().reference_rcnn_forward
    fast = prepare_for_training(build(("rcnn", {"norm": norm})).train(), "cpu")
    slow = build(("rcnn", {"norm": norm})).train()
    x = images(8, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(x), reference_forward(slow.eval(), x))
        # Batch statistics in training mode, without dropout's randomness.
        fast.train().dropout.p = slow.train().dropout.p = 0.0
        torch.testing.assert_close(fast(x), reference_forward(slow, x), rtol=1e-4, atol=1e-5)


def test_rcnn_without_recurrence_is_feed_forward():
    model = build(("rcnn", {}), steps=0)
    assert all(layer.recurrent is None for layer in (model.rcl1, model.rcl2))
    assert model(images(2)).shape == (2, NUM_CLASSES)


def test_prepare_for_training_keeps_the_function():
    model = build(("rcnn", {})).eval()
    prepared = prepare_for_training(copy.deepcopy(model), "cpu")
    assert prepared.rcl1.feedforward.weight.is_contiguous(memory_format=torch.channels_last)
    x = images(4)
    with torch.inference_mode():
        torch.testing.assert_close(prepared(x), model(x))


def test_compile_falls_back_without_a_compiler(monkeypatch, caplog, request):
    monkeypatch.setenv("CXX", "no-such-compiler")
    cpp_compiler_problem.cache_clear()
    request.addfinalizer(cpp_compiler_problem.cache_clear)  # forget the missing compiler
    model = build(("cnn", {}))
    assert maybe_compile(model, True) is model
    assert "torch.compile disabled" in caplog.text
    assert maybe_compile(model, False) is model


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["lrn", "bn"])
def test_compiled_rcnn_matches_eager(norm):
    # float64, for the reason given in test_optimised_rcnn_matches_the_paper_transcription.
    eager = build(("rcnn", {"norm": norm}), dropout=0.0).double().train()
    eager = prepare_for_training(eager, "cpu")
    compiled = maybe_compile(copy.deepcopy(eager), True)
    x, y = images(4).double(), torch.arange(4)
    F.cross_entropy(logits_eager := eager(x), y).backward()
    F.cross_entropy(logits_compiled := compiled(x), y).backward()
    torch.testing.assert_close(logits_compiled, logits_eager)
    compiled_params = dict(compiled.named_parameters())
    for name, p in eager.named_parameters():
        torch.testing.assert_close(
            compiled_params[f"_orig_mod.{name}"].grad,
            p.grad,
            msg=lambda m, name=name: f"{name}: {m}",
        )


def test_bf16_lrn_is_the_same_function_to_bfloat16_rounding():
    """The bf16 path (bf16 autocast) against float32: forward and gradient."""
    torch.manual_seed(0)
    lrn = ReluLRN(96)
    z = (3 * torch.randn(4, 96, 7, 7)).contiguous(memory_format=torch.channels_last)
    z32, z16 = z.clone().requires_grad_(), z.to(torch.bfloat16).requires_grad_()
    y32, y16 = lrn(z32), lrn(z16)
    assert y16.dtype == torch.bfloat16
    g = torch.randn_like(y32)
    y32.backward(g)
    y16.backward(g.to(torch.bfloat16))
    assert (y16.float() - y32).abs().max() <= 0.01 * y32.abs().max()
    assert (z16.grad.float() - z32.grad).abs().max() <= 0.02 * z32.grad.abs().max()
    assert (z16.grad.float() == 0).eq(z32.grad == 0).float().mean() > 0.99  # the ReLU mask
