"""WEFTModule: the LightningModule that trains, evaluates and runs a Segmentor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import lightning as L
import torch
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import nn

from weft_lightning import checkpoint as ckpt
from weft_lightning.callbacks.nan_guard import check_maps
from weft_lightning.data.sampling import real_samples
from weft_lightning.inference import EvaluationProtocol, InferenceProtocol, predict_probability
from weft_lightning.metrics import SODMetrics
from weft_lightning.models.contracts import HasLRScales
from weft_lightning.models.introspection import parameter_report
from weft_lightning.models.segmentor import Segmentor

VAL_KEYS = ("sm", "mae", "em_adp", "fm_adp", "wfm", "iou", "miou")
NO_DECAY_SUFFIXES = (
    "level_embed",
    "pos_embed",
    "cls_token",
    "reg_token",
    "query_feat",
    "query_embed",
    "prompts",
)


def poly_warmup_factor(step: int, warmup_steps: int, total_steps: int, power: float) -> float:
    """LR factor: linear warm-up from 0, then polynomial decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return (1.0 - progress) ** power


class WEFTModule(L.LightningModule):
    """Trains a :class:`Segmentor` with AdamW and poly decay, evaluates it with the field's metrics.

    Args:
        segmentor: the network (backbone + head).
        protocol: how validation, test and prediction turn an image at its original size into
            a probability map (views, windows, combination); see :mod:`weft_lightning.inference`.
        lr: peak learning rate.
        weight_decay: AdamW weight decay (not applied to biases, norms and embeddings).
        betas: AdamW betas.
        warmup_steps: linear warm-up iterations.
        poly_power: power of the polynomial decay to 0 (1 = linear).
        max_steps: length of the schedule; by default the trainer's estimate of the run length.
    """

    def __init__(
        self,
        segmentor: Segmentor,
        protocol: EvaluationProtocol = EvaluationProtocol(),
        lr: float = 5e-5,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 1500,
        poly_power: float = 1.0,
        max_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["segmentor", "protocol"])
        self.segmentor = segmentor
        self.protocol = protocol
        self.val_metrics = SODMetrics()
        self.test_metrics = nn.ModuleDict()

    # --------------------------------------------------------------- training
    def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Foreground probabilities (H, W) of normalised images (3, H, W) at their own size,
        with the test protocol."""
        return self.predict_maps(images, self.protocol.test)

    @torch.no_grad()
    def predict_maps(
        self, images: list[torch.Tensor], protocol: InferenceProtocol
    ) -> list[torch.Tensor]:
        """One foreground probability map (H, W) per normalised image (3, H, W), each at its
        image's size, computed with ``protocol``."""
        segmentor = self.segmentor
        return [
            predict_probability(image, segmentor.scores, segmentor.probability, protocol)
            for image in images
        ]

    def on_fit_start(self) -> None:
        """Report total / trainable parameter counts on screen and to every logger."""
        report = parameter_report(self.segmentor)
        rank_zero_info(
            f"Parameters: {report['total_params']:,} total, {report['trainable_params']:,} "
            f"trainable ({report['trainable_percent']}%)"
        )
        for logger in self.loggers:
            logger.log_hyperparams({"parameters": report})

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self.segmentor.loss(batch["image"], batch["mask"])
        size = int(batch["image"].shape[0])
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in losses.items()},
            prog_bar=False,
            batch_size=size,
        )
        self.log("loss", losses["loss"].detach(), prog_bar=True, logger=False, batch_size=size)
        return losses["loss"]

    # ------------------------------------------------------------- evaluation
    def _update(
        self,
        metrics: SODMetrics,
        batch: dict[str, Any],
        protocol: InferenceProtocol,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> list[torch.Tensor]:
        """Maps of the batch; the metrics count each image once (a distributed sampler's
        padding copies are left out)."""
        probs = self.predict_maps(batch["image"], protocol)
        check_maps(probs, batch["name"], self._trainer)
        real = real_samples(self._eval_loader(dataloader_idx), batch_idx, len(probs))
        targets = [torch.as_tensor(gt, device=self.device) for gt in batch["gt"]]
        kept = [i for i, keep in enumerate(real) if keep]
        if kept:
            metrics.update([probs[i] for i in kept], [targets[i] for i in kept])
        return probs

    def _eval_loader(self, dataloader_idx: int) -> Any:
        """The data loader of the running validation or test loop (None outside a trainer)."""
        if self._trainer is None:
            return None
        trainer = self.trainer
        loaders = trainer.test_dataloaders if trainer.testing else trainer.val_dataloaders
        if isinstance(loaders, list | tuple):
            return loaders[dataloader_idx]
        return loaders

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        probs = self._update(self.val_metrics, batch, self.protocol.validation, batch_idx)
        return {"probs": probs}

    def on_validation_epoch_end(self) -> None:
        results = self.val_metrics.compute()
        self.log_dict({f"val/{k}": results[k] for k in VAL_KEYS}, prog_bar=False, sync_dist=False)
        self.log("val_sm", results["sm"], prog_bar=True, logger=False)
        self.val_metrics.reset()

    def on_test_start(self) -> None:
        # Lightning sets Trainer.datamodule at run time; the Trainer class does not declare it
        names = getattr(self.trainer.datamodule, "test_names", None) or ["test"]  # type: ignore[attr-defined]
        self.test_metrics = nn.ModuleDict({n: SODMetrics() for n in names}).to(self.device)

    def test_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        name = batch["dataset"][0]
        metrics = cast(SODMetrics, self.test_metrics[name])
        probs = self._update(metrics, batch, self.protocol.test, batch_idx, dataloader_idx)
        return {"probs": probs, "name": batch["name"], "dataset": batch["dataset"]}

    def on_test_epoch_end(self) -> None:
        from weft_lightning.evaluation import format_table

        table: dict[str, dict[str, float]] = {}
        for name, metrics in cast("Mapping[str, SODMetrics]", self.test_metrics).items():
            results = {k: float(v) for k, v in metrics.compute().items()}
            self.log_dict({f"test/{name}/{k}": v for k, v in results.items()})
            table[name] = results
            metrics.reset()
        if self.trainer.is_global_zero:  # the run's result: on stdout, once, by dataset
            print("\n" + format_table(table), flush=True)
        self.test_results = table

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        probs = self.predict_maps(batch["image"], self.protocol.test)
        check_maps(probs, batch["name"], self._trainer)
        return {"probs": probs, "name": batch["name"], "dataset": batch["dataset"]}

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep trainable weights only (plus the backbone identity) and the RNG states."""
        ckpt.slim_checkpoint(self, checkpoint)
        checkpoint[ckpt.RNG_KEY] = ckpt.collect_rng_states()
        if self._trainer is not None:
            checkpoint[ckpt.WORLD_SIZE_KEY] = self.trainer.world_size

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check the frozen backbone, refill its weights; when resuming a fit, restore the RNGs."""
        trainer = self._trainer
        source = str(getattr(trainer, "ckpt_path", None) or "")
        ckpt.restore_checkpoint(self, checkpoint, source)
        states = checkpoint.get(ckpt.RNG_KEY)
        if states is not None and trainer is not None and trainer.state.fn == "fit":
            ckpt.restore_rng_states(states)
            _warn_inexact_resume(trainer, checkpoint)

    # -------------------------------------------------------------- optimiser
    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups of trainable parameters by (LR scale, weight decay).

        Biases, norms and embeddings get no weight decay. A backbone with ``lr_scales()``
        (full fine-tuning's layer-wise LR decay) scales the LR of its parameters.
        """
        hp = cast(AttributeDict, self.hparams)  # save_hyperparameters stores an AttributeDict
        backbone = self.segmentor.backbone
        scales = {}
        if isinstance(backbone, HasLRScales):
            scales = {f"backbone.{k}": v for k, v in backbone.lr_scales().items()}
        groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
        for name, param in self.segmentor.named_parameters():
            if not param.requires_grad:
                continue
            is_embedding = name.endswith(NO_DECAY_SUFFIXES)
            decay = param.ndim > 1 and not is_embedding
            groups.setdefault((scales.get(name, 1.0), decay), []).append(param)
        return [
            {
                "params": params,
                "lr": hp.lr * scale,
                "weight_decay": hp.weight_decay if decay else 0.0,
            }
            for (scale, decay), params in sorted(groups.items(), key=lambda kv: kv[0])
        ]

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        hp = cast(AttributeDict, self.hparams)  # save_hyperparameters stores an AttributeDict
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=hp.lr, betas=tuple(hp.betas))
        total = hp.max_steps or int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: poly_warmup_factor(step, hp.warmup_steps, total, hp.poly_power),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }


def _warn_inexact_resume(trainer: L.Trainer, checkpoint: dict[str, Any]) -> None:
    """One line when a resumed fit cannot continue exactly as the interrupted run would have."""
    saved = checkpoint.get(ckpt.WORLD_SIZE_KEY)
    if saved is not None and saved != trainer.world_size:
        rank_zero_warn(
            f"Resuming on {trainer.world_size} process(es) a run written on {saved}: it "
            "continues, but each process now sees other samples, so not exactly as it would have."
        )
