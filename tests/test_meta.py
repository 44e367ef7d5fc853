"""The MAML inner loop: meta-gradients of both backends against an independent double loop
and finite differences, first vs second order, BatchNorm buffers, the adaptation curve,
option errors."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from au_lightning.errors import ConfigError
from au_lightning.meta import InnerLoop

LR = 0.03
Task = tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The tensors are tiny: intra-op threads only add contention on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bce(logits: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits.view(-1), target)


def tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 1),
    ).double()


def make_tasks(count: int = 2, shots: int = 4, seed: int = 1) -> list[Task]:
    gen = torch.Generator().manual_seed(seed)

    def batch() -> tuple[Tensor, Tensor]:
        x = torch.randn(2 * shots, 3, 8, 8, generator=gen, dtype=torch.float64)
        return x, torch.tensor([1.0, 0.0] * shots, dtype=torch.float64)

    return [(batch(), batch()) for _ in range(count)]


def meta_grads(model: nn.Module, inner: InnerLoop, tasks: list[Task]) -> list[Tensor]:
    loss = torch.stack([inner.query_loss(model, bce, s, q) for s, q in tasks]).mean()
    return list(torch.autograd.grad(loss, list(model.parameters())))


def reference_meta_loss(
    model: nn.Module, tasks: list[Task], optimizer: str, first_order: bool, steps: int
) -> Tensor:
    """Mean query loss by an explicit double loop: functional_call on θ_i, inner gradients by
    autograd.grad(create_graph=True) (detached in first order); SGD θ − αg, or Adam in the
    form of Kingma & Ba Sec. 2 (last paragraph): α_t = α sqrt(1 − β2^t)/(1 − β1^t),
    θ − α_t m / (sqrt(v) + ε)."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    theta = dict(model.named_parameters())
    losses = []
    for (xs, ys), (xq, yq) in tasks:
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        params = dict(theta)
        m = {n: torch.zeros_like(p) for n, p in theta.items()}
        v = {n: torch.zeros_like(p) for n, p in theta.items()}
        for t in range(1, steps + 1):
            loss = bce(functional_call(model, (params, buffers), (xs,)), ys)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            for (name, p), g in zip(list(params.items()), grads, strict=True):
                g = g.detach() if first_order else g
                if optimizer == "sgd":
                    params[name] = p - LR * g
                    continue
                m[name] = beta1 * m[name] + (1 - beta1) * g
                v[name] = beta2 * v[name] + (1 - beta2) * g**2
                alpha_t = LR * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                params[name] = p - alpha_t * m[name] / (v[name].sqrt() + eps)
        losses.append(bce(functional_call(model, (params, buffers), (xq,)), yq))
    return torch.stack(losses).mean()


def assert_all_close(actual: list[Tensor], expected: list[Tensor]) -> None:
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_meta_gradient_matches_func_and_double_loop(
    optimizer: str, first_order: bool, steps: int
) -> None:
    model, tasks = tiny_net(), make_tasks(count=3)
    kwargs = {"lr": LR, "steps": steps, "optimizer": optimizer, "first_order": first_order}
    by_higher = meta_grads(model, InnerLoop(**kwargs, backend="higher"), tasks)
    by_func = meta_grads(model, InnerLoop(**kwargs, backend="func"), tasks)
    reference = reference_meta_loss(model, tasks, optimizer, first_order, steps)
    expected = torch.autograd.grad(reference, list(model.parameters()))
    assert all(g.abs().max() > 1e-4 for g in expected)
    assert_all_close(by_higher, expected)
    assert_all_close(by_func, expected)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_second_order_is_the_finite_difference_gradient(optimizer: str, mode: str) -> None:
    model, tasks = tiny_net(), make_tasks()
    model.train(mode == "train")
    inner = InnerLoop(lr=LR, steps=2, optimizer=optimizer)
    grads = meta_grads(model, inner, tasks)
    direction = [torch.randn_like(p) for p in model.parameters()]

    def meta_loss(shift: float) -> float:
        shifted = copy.deepcopy(model)
        with torch.no_grad():
            for p, d in zip(shifted.parameters(), direction, strict=True):
                p += shift * d
            return torch.stack([inner.query_loss(shifted, bce, s, q) for s, q in tasks]).mean()

    eps = 1e-6
    numeric = (meta_loss(eps) - meta_loss(-eps)).item() / (2 * eps)
    analytic = sum((g * d).sum() for g, d in zip(grads, direction, strict=True)).item()
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("backend", ["higher", "func"])
def test_first_and_second_order_differ(backend: str) -> None:
    model, tasks = tiny_net(), make_tasks()
    second = meta_grads(model, InnerLoop(lr=0.5, backend=backend), tasks)
    first = meta_grads(model, InnerLoop(lr=0.5, first_order=True, backend=backend), tasks)
    assert not all(
        torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(first, second, strict=True)
    )


def test_zero_and_missing_inner_gradients_with_second_order_adam() -> None:
    """Channel 0 is dead (zero filter, BN shift -1, then ReLU), so its conv filter, BN scale
    and linear weight have exactly zero inner gradients; an extra parameter is unused (None
    gradient). Higher masks the second moment's gradient where it is 0; unmasked, sqrt'(0)
    would make these NaN."""
    model, tasks = tiny_net(), make_tasks()
    with torch.no_grad():
        model[0].weight[0] = 0.0
        model[1].bias[0] = -1.0
    model.register_parameter("unused", nn.Parameter(torch.ones(2, dtype=torch.float64)))
    (xs, ys), _ = tasks[0]
    inner_grads = torch.autograd.grad(bce(model(xs), ys), [model[0].weight, model[1].weight])
    assert inner_grads[0][0].eq(0).all() and inner_grads[1][0] == 0

    def grads(backend: str) -> dict[str, Tensor | None]:
        model.zero_grad(set_to_none=True)
        inner = InnerLoop(lr=LR, steps=2, optimizer="adam", backend=backend)
        torch.stack([inner.query_loss(model, bce, s, q) for s, q in tasks]).mean().backward()
        return {name: p.grad for name, p in model.named_parameters()}

    by_higher, by_func = grads("higher"), grads("func")
    assert by_higher.pop("unused") is None and by_func.pop("unused") is None
    assert all(g.isfinite().all() for g in [*by_higher.values(), *by_func.values()])
    assert_all_close(list(by_higher.values()), list(by_func.values()))


def test_frozen_parameters_stay_frozen() -> None:
    """A parameter that does not require grad is not stepped (higher would step it from the
    second step of a track_higher_grads=False loop if it were in the inner optimizer)."""
    model, tasks = tiny_net(), make_tasks()
    model[5].bias.requires_grad_(False)
    (support, (xq, yq)) = tasks[0]
    curves, losses = [], []
    for backend in ("higher", "func"):
        inner = InnerLoop(lr=0.1, steps=3, optimizer="adam", backend=backend)
        curves.append(inner.adaptation_curve(model, bce, support, xq))
        losses.append(inner.query_loss(model, bce, support, (xq, yq)))
    assert_all_close(curves[0], curves[1])
    assert_all_close(losses, [bce(curves[1][-1], yq)] * 2)
    losses[0].backward()
    assert model[5].bias.grad is None and model[5].weight.grad is not None


def bn_state(model: nn.Module) -> dict[str, Tensor]:
    return {name: b.clone() for name, b in model.named_buffers()}


@pytest.mark.parametrize("backend", ["higher", "func"])
def test_batchnorm_buffers_untouched_in_train_mode(backend: str) -> None:
    model, tasks = tiny_net(), make_tasks()
    with torch.no_grad():
        model(torch.randn(8, 3, 8, 8, dtype=torch.float64))  # non-trivial running stats
    before = bn_state(model)
    inner = InnerLoop(lr=LR, steps=2, optimizer="adam", backend=backend)
    torch.stack([inner.query_loss(model, bce, s, q) for s, q in tasks]).mean().backward()
    (support, (xq, _)) = tasks[0]
    inner.adaptation_curve(model, bce, support, xq, steps=3)
    after = bn_state(model)
    assert model.training and before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("backend", ["higher", "func"])
def test_adaptation_curve_leaves_the_model_unchanged(backend: str, mode: str) -> None:
    model, tasks = tiny_net(), make_tasks()
    model.train(mode == "train")
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    state = copy.deepcopy(model.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    (support, (xq, _)) = tasks[0]
    curve = InnerLoop(lr=LR, steps=2, backend=backend).adaptation_curve(model, bce, support, xq)
    assert len(curve) == 3
    assert all(not out.requires_grad and out.shape == (len(xq), 1) for out in curve)
    assert not torch.equal(curve[0], curve[-1])
    current = model.state_dict()
    assert all(torch.equal(state[key], current[key]) for key in state)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    with torch.no_grad():
        torch.testing.assert_close(curve[0], copy.deepcopy(model)(xq), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.5), ("adam", 0.1)])
def test_adaptation_curve_backends_agree_and_fit_the_support_set(optimizer: str, lr: float) -> None:
    """Toy task: the label is whether the image is bright; the support loss falls at every
    step of the curve and by 40% over 5 steps, and both backends give the same curve."""
    model = tiny_net(seed=3)
    gen = torch.Generator().manual_seed(4)
    y = torch.tensor([1.0, 0.0] * 5, dtype=torch.float64)
    x = torch.randn(10, 3, 8, 8, generator=gen, dtype=torch.float64) + 2 * y.view(-1, 1, 1, 1)
    curves = {
        backend: InnerLoop(lr=lr, optimizer=optimizer, backend=backend).adaptation_curve(
            model, bce, (x, y), x, steps=5
        )
        for backend in ("higher", "func")
    }
    assert len(curves["higher"]) == 6
    assert_all_close(curves["func"], curves["higher"])
    losses = [bce(out, y).item() for out in curves["func"]]
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))
    assert losses[-1] < 0.6 * losses[0]


@pytest.mark.parametrize("backend", ["higher", "func"])
def test_no_grad_works_and_inference_mode_is_refused(backend: str) -> None:
    model, tasks = tiny_net(), make_tasks()
    model.eval()
    inner = InnerLoop(lr=LR, steps=2, backend=backend)
    (support, (xq, yq)) = tasks[0]
    curve = inner.adaptation_curve(model, bce, support, xq)
    with torch.no_grad():
        assert_all_close(inner.adaptation_curve(model, bce, support, xq), curve)
        loss = inner.query_loss(model, bce, support, (xq, yq))
    assert loss.item() == pytest.approx(bce(curve[-1], yq).item(), rel=1e-12)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference mode") as error:
        inner.adaptation_curve(model, bce, support, xq)
    assert "inference_mode=False" in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"steps": 0}, "steps"),
        ({"steps": 1.5}, "steps"),
        ({"optimizer": "rmsprop"}, "optimizer 'rmsprop'; valid: sgd, adam"),
        ({"backend": "jax"}, "backend 'jax'; valid: higher, func"),
    ],
)
def test_invalid_options_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        InnerLoop(**kwargs)


def test_curve_steps_are_validated_and_zero_gives_the_plain_output() -> None:
    model, tasks = tiny_net(), make_tasks()
    model.eval()
    (support, (xq, _)) = tasks[0]
    inner = InnerLoop()
    with pytest.raises(ConfigError, match="steps"):
        inner.adaptation_curve(model, bce, support, xq, steps=-1)
    (only,) = inner.adaptation_curve(model, bce, support, xq, steps=0)
    with torch.no_grad():
        torch.testing.assert_close(only, model(xq), rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["higher", "func"])
def test_query_loss_fn_scores_the_adapted_model_on_the_query(backend: str) -> None:
    torch.manual_seed(3)
    model = nn.Linear(3, 2).double()
    gen = torch.Generator().manual_seed(4)
    xs, ys = (torch.randn(5, k, generator=gen, dtype=torch.float64) for k in (3, 2))
    xq, yq = (torch.randn(4, k, generator=gen, dtype=torch.float64) for k in (3, 2))
    inner = InnerLoop(lr=0.1, steps=1, optimizer="sgd", backend=backend)
    loss = inner.query_loss(model, F.mse_loss, (xs, ys), (xq, yq), query_loss_fn=F.l1_loss)

    # by hand: MSE = mean(r²) over the 5x2 residuals r = x Wᵀ + b − y, so
    # ∇W = 2 rᵀx / 10 and ∇b = 2 Σ r / 10; one SGD step, then the mean |residual| on the query
    w, b = model.weight.detach(), model.bias.detach()
    r = xs @ w.T + b - ys
    w1, b1 = w - 0.1 * 2 * r.T @ xs / 10, b - 0.1 * 2 * r.sum(0) / 10
    expected = (xq @ w1.T + b1 - yq).abs().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    mse = inner.query_loss(model, F.mse_loss, (xs, ys), (xq, yq))
    assert mse.item() == pytest.approx(((xq @ w1.T + b1 - yq) ** 2).mean().item(), rel=1e-12)
    assert abs(mse.item() - loss.item()) > 1e-3  # the query loss is not the inner loss

    # the second-order meta-gradient, unrolled by hand
    theta = {name: p.detach().clone().requires_grad_() for name, p in model.named_parameters()}
    inner_loss = F.mse_loss(functional_call(model, theta, (xs,)), ys)
    grads = torch.autograd.grad(inner_loss, list(theta.values()), create_graph=True)
    adapted = {n: p - 0.1 * g for (n, p), g in zip(theta.items(), grads, strict=True)}
    reference = F.l1_loss(functional_call(model, adapted, (xq,)), yq)
    assert reference.item() == pytest.approx(expected.item(), rel=1e-12)
    expected_grads = torch.autograd.grad(reference, list(theta.values()))
    meta = torch.autograd.grad(loss, list(model.parameters()))
    for got, want in zip(meta, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # the second-order terms matter here: the check above would fail without them
    adapted_fo = {n: p - 0.1 * g.detach() for (n, p), g in zip(theta.items(), grads, strict=True)}
    first_order = torch.autograd.grad(
        F.l1_loss(functional_call(model, adapted_fo, (xq,)), yq), list(theta.values())
    )
    assert any((got - fo).abs().max() > 1e-3 for got, fo in zip(meta, first_order, strict=True))
