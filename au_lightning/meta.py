"""The MAML inner loop (Finn, Abbeel & Levine 2017) as used by Lee, Rudovic, Pavlovic & Pantic.

For each task i of a meta-batch, Alg. 1 of Lee et al. evaluates the loss on the support set
D[tr] at θ (line 7), adapts θ_i = θ − α∇θ L(θ; D[tr]) (line 8, Eq. 1) and evaluates the loss of
θ_i on the query set D[trv] (line 9); the outer update uses the gradient w.r.t. θ of the sum of
the query losses (line 11, Eq. 2). :class:`InnerLoop` computes one task's query loss
L(θ_i; D[trv]), differentiable w.r.t. the model's parameters, and the evaluation-time
adaptation curve (Lee et al. Fig. 8). Both run ``steps`` inner steps of plain SGD
(θ ← θ − αg, Eq. 1) or of Adam (Kingma & Ba 2015; Lee et al. use Adam with α = β = 0.03).
MAL's virtual step (Li & Shan, Eq. 6-7) is one SGD step of it, with a query loss of its own.

Second order (default) differentiates through the inner gradients: the exact MAML gradient
of Finn et al., with its Hessian-vector terms. First order detaches them, θ_i = θ − α·stopgrad(g),
so dL/dθ = dL/dθ_i (Finn et al.'s first-order approximation).

Backends, which give the same values and meta-gradients:

* ``"higher"``: ``higher.innerloop_ctx(model, opt, copy_initial_weights=False,
  track_higher_grads=True)`` with ``opt`` a ``torch.optim.SGD``/``Adam(lr)`` over the model's
  trainable parameters, used for the differentiable inner steps only (the real parameters
  are never stepped). First order passes a ``grad_callback`` that detaches the gradients;
  higher still builds the second-order graph of each inner backward and then cuts it.
* ``"func"``: ``torch.func.functional_call`` on a dict of parameters that starts as the
  model's own, with SGD and Adam steps written here on ``torch.autograd.grad(...,
  create_graph=not first_order)``. Adam is higher's ``DifferentiableAdam``: betas (0.9, 0.999),
  eps 1e-8 added to sqrt(v) before bias correction, step size α·sqrt(1 − β2^t)/(1 − β1^t), and
  no gradient flows into the second moment where it is exactly 0 (there sqrt has an
  infinite derivative; higher masks it with a hook, here a ``torch.where`` with a detached
  branch), so a parameter with an exactly zero gradient gives no NaN in second order.

In both, a parameter that does not require grad or whose inner gradient is None (unused by
the forward) is left unchanged by the inner steps.

Batch normalisation: the model runs in whatever mode the caller set (train mode normalises
with the batch statistics of the support or query batch, eval mode with the running ones).
Inner-loop and query forwards never write the real module's buffers (running mean and
variance, ``num_batches_tracked``): higher's patched module holds clones of them, and the
func backend passes clones to ``functional_call``; each call starts from fresh clones.

Precision: the inner loop runs under the Trainer's autocast like any forward, so
``bf16-mixed`` works (parameters, inner steps and meta-gradients stay float32). float16 does
not: higher has no GradScaler support, and neither backend scales the inner losses, so
float16 inner gradients (and MAL's meta-gradient) would underflow unscaled.
:func:`check_meta_precision` refuses it at setup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Literal, get_args

import higher
import torch
from torch import Tensor, nn
from torch.func import functional_call

from au_lightning.errors import ConfigError

__all__ = ["InnerLoop", "InnerOptimizer", "MetaBackend", "check_meta_precision"]

InnerOptimizer = Literal["sgd", "adam"]
MetaBackend = Literal["higher", "func"]
LossFn = Callable[[Any, Any], Tensor]

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8

#: ``trainer.precision`` values of float16 arithmetic, which the inner loop cannot take
FLOAT16_PRECISIONS: tuple[str, ...] = ("16", "16-mixed", "16-true", "transformer-engine-float16")


def check_meta_precision(trainer: Any, method: str) -> None:
    """Raise :class:`ConfigError` when ``trainer.precision`` is float16 (``16-mixed``,
    ``16-true``) for ``method``, a method whose training or evaluation differentiates
    through :class:`InnerLoop`'s steps.

    ``16-mixed`` relies on a GradScaler to keep small float16 gradients from underflowing;
    higher has no GradScaler support, and the inner gradients (``torch.autograd.grad`` in
    both backends, and MAL's meta-gradient) are taken from unscaled losses. ``bf16-mixed``
    has float32's exponent range and needs no scaler; ``32-true`` (and ``64-true``) work
    as well. ``trainer`` is anything with a ``precision`` attribute (a Lightning Trainer
    gives e.g. ``"16-mixed"``). On CPU Lightning itself turns ``16-mixed`` into
    ``bf16-mixed``, which passes.
    """
    precision = str(getattr(trainer, "precision", "32-true"))
    if precision in FLOAT16_PRECISIONS:
        raise ConfigError(
            f"trainer.precision {precision} is not supported by {method}: its inner loop "
            "(higher or torch.func) differentiates through float16 gradients without a "
            "GradScaler (higher has no GradScaler support); use trainer.precision "
            "bf16-mixed, or 32-true"
        )


class InnerLoop:
    """``steps`` differentiable inner steps of ``optimizer`` with learning rate ``lr`` (the α
    of Lee et al. Alg. 1 line 8 and Eq. 1) from the model's current parameters θ.

    ``steps`` must be at least 1: meta-training with no inner step is plain training on
    the query sets, not MAML. :meth:`adaptation_curve` takes its own ``steps`` (0 allowed).
    """

    def __init__(
        self,
        lr: float = 0.03,
        steps: int = 1,
        optimizer: InnerOptimizer = "sgd",
        first_order: bool = False,
        backend: MetaBackend = "higher",
    ) -> None:
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"inner lr must be a number > 0, got {lr!r}")
        _check_steps(steps, minimum=1)
        _check_name("inner optimizer", optimizer, get_args(InnerOptimizer))
        _check_name("meta backend", backend, get_args(MetaBackend))
        self.lr = float(lr)
        self.steps = steps
        self.optimizer = optimizer
        self.first_order = bool(first_order)
        self.backend = backend

    def __repr__(self) -> str:
        return (
            f"InnerLoop(lr={self.lr}, steps={self.steps}, optimizer={self.optimizer!r}, "
            f"first_order={self.first_order}, backend={self.backend!r})"
        )

    def query_loss(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        support: tuple[Any, Any],
        query: tuple[Any, Any],
        query_loss_fn: LossFn | None = None,
    ) -> Tensor:
        """L(θ_i; query) where θ_i = ``steps`` inner steps of ``optimizer`` from the model's
        current parameters θ on ``loss_fn(model(support[0]), support[1])`` (Alg. 1 lines
        7-9 of Lee et al., Eq. 1). The query loss is ``query_loss_fn`` (default
        ``loss_fn``): MAL's inner loss is a weighted multi-task loss and its query loss the
        AU validation loss (Li & Shan, Eq. 5-7).

        The result is differentiable w.r.t. the model's parameters: second order unless
        ``first_order`` (then the inner gradients are detached). The caller backpropagates
        it, e.g. the mean over the tasks of a meta-batch in one backward (line 11, Eq. 2).
        Grad is enabled inside, so under ``torch.no_grad()`` the value is still right (and
        carries a graph); inference mode raises ``RuntimeError``.
        """
        _check_not_inference("InnerLoop.query_loss")
        x_query, y_query = query
        query_loss_fn = query_loss_fn or loss_fn
        with torch.enable_grad():
            if self.backend == "higher":
                opt = self._torch_optimizer(model)
                callback = _detached if self.first_order else None
                with higher.innerloop_ctx(
                    model, opt, copy_initial_weights=False, track_higher_grads=True
                ) as (fmodel, diffopt):
                    for _ in range(self.steps):
                        loss = loss_fn(fmodel(support[0]), support[1])
                        diffopt.step(loss, grad_callback=callback)
                    return query_loss_fn(fmodel(x_query), y_query)
            forward = _functional(model)
            theta = dict(model.named_parameters())
            *_, params = self._func_steps(forward, theta, loss_fn, support, self.steps)
            return query_loss_fn(forward(params, x_query), y_query)

    def adaptation_curve(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        support: tuple[Tensor, Tensor],
        query_x: Tensor,
        steps: int | None = None,
    ) -> list[Tensor]:
        """Evaluation-time adaptation (Lee et al. Fig. 8): the model's outputs on
        ``query_x`` at θ (step 0) and after each of ``steps`` (default ``self.steps``) inner
        steps on the support set; ``steps + 1`` detached tensors.

        No meta-graph is built. The model's parameters, their ``.grad`` and its buffers are
        left unchanged. Grad is enabled inside, so this works under ``torch.no_grad()``; it
        cannot work in inference mode (``RuntimeError``).
        """
        _check_not_inference("InnerLoop.adaptation_curve")
        steps = self.steps if steps is None else steps
        _check_steps(steps, minimum=0)
        with torch.enable_grad():
            if self.backend == "higher":
                opt = self._torch_optimizer(model)
                with higher.innerloop_ctx(
                    model, opt, copy_initial_weights=True, track_higher_grads=False
                ) as (fmodel, diffopt):
                    outputs = [fmodel(query_x).detach()]
                    for _ in range(steps):
                        diffopt.step(loss_fn(fmodel(support[0]), support[1]))
                        outputs.append(fmodel(query_x).detach())
                    return outputs
            forward = _functional(model)
            theta = {
                name: p.detach().requires_grad_(p.requires_grad)
                for name, p in model.named_parameters()
            }
            outputs = [forward(theta, query_x).detach()]
            for params in self._func_steps(forward, theta, loss_fn, support, steps, False):
                outputs.append(forward(params, query_x).detach())
            return outputs

    def _torch_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        trainable = [p for p in model.parameters() if p.requires_grad]
        if self.optimizer == "adam":
            return torch.optim.Adam(trainable, lr=self.lr, betas=ADAM_BETAS, eps=ADAM_EPS)
        return torch.optim.SGD(trainable, lr=self.lr)

    def _func_steps(
        self,
        forward: Callable[[dict[str, Tensor], Tensor], Tensor],
        params: dict[str, Tensor],
        loss_fn: LossFn,
        support: tuple[Tensor, Tensor],
        steps: int,
        track: bool = True,
    ) -> Iterator[dict[str, Tensor]]:
        """Yields the parameters after each inner step. ``track`` keeps them differentiable
        w.r.t. the initial ones (second order unless ``first_order``); otherwise each step's
        parameters are detached leaves."""
        create_graph = track and not self.first_order
        moments: dict[str, tuple[Tensor, Tensor, int]] = {}
        for _ in range(steps):
            names = [name for name, p in params.items() if p.requires_grad]
            loss = loss_fn(forward(params, support[0]), support[1])
            grads = torch.autograd.grad(
                loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True
            )
            params = dict(params)
            for name, grad in zip(names, grads, strict=True):
                if grad is None:
                    continue
                if self.optimizer == "adam":
                    new, moments[name] = _adam_step(params[name], grad, moments.get(name), self.lr)
                else:
                    new = params[name] - self.lr * grad
                params[name] = new if track else new.detach().requires_grad_()
            yield params


def _adam_step(
    p: Tensor, grad: Tensor, moments: tuple[Tensor, Tensor, int] | None, lr: float
) -> tuple[Tensor, tuple[Tensor, Tensor, int]]:
    """One step of higher's ``DifferentiableAdam``; returns the new parameter and moments."""
    beta1, beta2 = ADAM_BETAS
    exp_avg, exp_avg_sq, step = moments or (torch.zeros_like(p), torch.zeros_like(p), 0)
    step += 1
    exp_avg = exp_avg * beta1 + (1 - beta1) * grad
    exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
    if exp_avg_sq.requires_grad:
        exp_avg_sq = torch.where(exp_avg_sq == 0, exp_avg_sq.detach(), exp_avg_sq)
    denom = exp_avg_sq.sqrt() + ADAM_EPS
    step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
    return p + (-step_size) * (exp_avg / denom), (exp_avg, exp_avg_sq, step)


def _functional(model: nn.Module) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
    """``forward(params, x)``: the model with ``params`` and clones of its buffers, which
    the forwards (BatchNorm in train mode) update instead of the model's own."""
    buffers = {name: b.clone() for name, b in model.named_buffers()}

    def forward(params: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, (params, buffers), (x,))

    return forward


def _detached(grads: list[Tensor | None]) -> list[Tensor | None]:
    return [None if g is None else g.detach() for g in grads]


def _check_steps(steps: int, minimum: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < minimum:
        raise ConfigError(f"inner steps must be an integer >= {minimum}, got {steps!r}")


def _check_name(option: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {option} {value!r}; valid: {', '.join(valid)}")


def _check_not_inference(where: str) -> None:
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{where} needs autograd for its inner steps and cannot run in inference mode "
            "(torch.inference_mode); run evaluation under torch.no_grad() instead, e.g. "
            "with the Lightning Trainer's inference_mode=False"
        )
