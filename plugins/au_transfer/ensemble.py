"""TransferEnsemble: the views of Ji et al. averaged (Sec. 3.5), thresholds searched (Sec. 3.6)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from lightning.pytorch.utilities import move_data_to_device
from torch import Tensor, nn

from au_lightning import AUMethod, ConfigError, ThresholdCriterion, load_method


class TransferEnsemble(AUMethod):
    """Views (trained AU methods, e.g. :class:`~au_transfer.Transfer` runs) ensembled by the
    average of their per-AU probabilities (Ji et al. Sec. 3.5). It trains nothing:
    evaluate it with ``au-lightning test`` (or ``validate``/``predict``) and no checkpoint.

    With ``threshold_search`` the test (and ``predict``) first runs the validation split
    through the ensemble and searches one threshold per AU there (Sec. 3.6) for the best
    ``threshold_criterion``; the test then reports the scores at these thresholds and at
    ``thresholds`` (``untuned``). A single view is evaluated the same way, so every rung of
    the paper's Table 2 is one ``test``. Test results add the final score, (accuracy + F1)
    / 2 (Sec. 4.3).

    Args:
        views: checkpoints of trained AU methods with the same AUs.
        aus: None takes the views' AUs; given, it must equal them.
        thresholds: the untuned decision threshold(s).
        threshold_search: search per-AU thresholds on the validation split before testing.
        threshold_criterion: ``score`` ((accuracy + F1) / 2) or ``f1``.
    """

    reports_final_score: ClassVar[bool] = True

    def __init__(
        self,
        views: list[str],
        aus: str | list[int] | None = None,
        thresholds: float | list[float] = 0.5,
        threshold_search: bool = True,
        threshold_criterion: ThresholdCriterion = "score",
    ) -> None:
        if not views:
            raise ConfigError("model.views: give the checkpoints of one or more trained views")
        models = [load_method(path) for path in views]
        for path, model in zip(views, models, strict=True):
            if not isinstance(model, AUMethod):
                raise ConfigError(
                    f"model.views: {path} holds a {type(model).__name__}, not an AU method"
                )
        view_aus = list(models[0].aus)
        for path, model in zip(views[1:], models[1:], strict=True):
            if list(model.aus) != view_aus:
                raise ConfigError(
                    f"model.views: {path} detects AUs {list(model.aus)}, {views[0]} detects "
                    f"{view_aus}; ensembled views need the same AUs"
                )
        super().__init__(
            view_aus if aus is None else aus,
            thresholds,
            threshold_search,
            threshold_criterion=threshold_criterion,
        )
        if list(self.aus) != view_aus:
            raise ConfigError(f"model.aus {list(self.aus)} differ from the views' AUs {view_aus}")
        self.save_hyperparameters()
        self.views = nn.ModuleList(models)
        self.views.requires_grad_(False)

    def probabilities(self, images: Tensor) -> Tensor:
        """The mean over views of the per-AU probabilities (B, L) (Sec. 3.5)."""
        probs = [torch.sigmoid(view(images).double()) for view in self.views]
        return torch.stack(probs).mean(0)

    def forward(self, images: Tensor) -> Tensor:
        """The logit of the views' mean probability, so the sigmoid gives that mean back (in
        float64; probabilities within 1e-12 of 0 or 1 are clamped there)."""
        return torch.logit(self.probabilities(images), eps=1e-12)

    def on_test_epoch_start(self) -> None:
        if self.threshold_search:
            self._search_on_validation()
        super().on_test_epoch_start()

    def on_predict_start(self) -> None:
        if self.threshold_search:
            if getattr(self.trainer.datamodule, "index", None) is None:
                raise ConfigError(
                    "TransferEnsemble searches its thresholds on the validation split, which "
                    "data.predict_root leaves unread; pass the thresholds a test found "
                    "(--model.thresholds [...], its test_results.csv) with "
                    "--model.threshold_search false"
                )
            self._search_on_validation()

    def _search_on_validation(self) -> None:
        datamodule = self.trainer.datamodule
        loader = datamodule.val_dataloader() if datamodule is not None else []
        if not loader:
            raise ConfigError(
                "model.threshold_search tunes thresholds on the validation split, but the data "
                "has none; set data.val_strategy to subjects or frames"
            )
        for batch in loader:
            batch = move_data_to_device(batch, self.device)
            # the probabilities exactly as the test step computes them from forward, with the
            # Trainer's precision (this hook runs outside the steps' autocast)
            with self.trainer.precision_plugin.forward_context():
                probs = torch.sigmoid(self(batch["image"]).float())
            self.val_search.update(probs, batch["occurrence"])
        self.tune_thresholds()

    def configure_optimizers(self) -> Any:
        raise ConfigError(
            "TransferEnsemble trains nothing: run `au-lightning test` with it (its views are "
            "trained with the transfer method)"
        )
