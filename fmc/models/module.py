"""The LightningModule: a 3D U-Net trained to turn one view into the fusion.

It takes plain keyword arguments and builds its network itself, so that
``FusionModule.load_from_checkpoint(path)`` alone rebuilds it (docs/design.md decision 1): everything
prediction needs -- input channels and their scaling, normalisation, patch size, training spacing,
study, content -- is stored in the checkpoint's hyperparameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack
from typing import Any

import lightning as L
import torch

from fmc.models.losses import build_loss
from fmc.models.networks import build_network
from fmc.models.optimizers import build_optimization
from fmc.models.patch_metric import PooledPatchNSSIM
from fmc.models.weight_averaging import (
    AVERAGE_STATE_KEY,
    TRAINED_WEIGHTS_KEY,
    build_averager,
    weights_swapped,
)

CONFIDENCES = ("none", "head")


def confidence_blend(inputs: torch.Tensor, out: torch.Tensor, residual: bool
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A confidence head's output: the view blended toward the prediction by sigmoid(logit).

    ``out`` holds the prediction (channel 0) and the confidence logit (channel 1); returns
    ``(blended, prediction, logit)``. Shared by the module and its exports
    (:mod:`fmc.inference.tile_function`).
    """
    view = inputs[:, :1]
    prediction, logit = out[:, :1], out[:, 1:2]
    if residual:  # UNet3D adds the view to every output channel
        logit = logit - view
    blended = view + torch.sigmoid(logit) * (prediction - view)
    return blended, prediction, logit


class FusionModule(L.LightningModule):
    """Train, validate and checkpoint a 3D network (:mod:`fmc.models.networks`).

    Parameters
    ----------
    channels : sequence of str
        H5 datasets fed to the network, in order (``raw_image`` first).
    features, depth, norm, out_activation, residual, negative_slope :
        Network settings (see :class:`fmc.models.unet3d.UNet3D`).
    loss : str
        Training loss, a name of :data:`fmc.models.losses.LOSSES` (``ssim_l1``, ``nssim_l1``,
        ``l1``, or an entry point of group ``fmc.losses``); ``loss_kwargs`` go to its builder.
    optimizer : str
        A name of :data:`fmc.models.optimizers.OPTIMIZERS` (``radam``, ``adam``, ``adamw``).
    lr, weight_decay : float
    scheduler : str
        A name of :data:`fmc.models.optimizers.SCHEDULERS`: ``none``, ``cosine`` (decays over
        ``max_steps``, or the estimated steps) or ``plateau`` (halves the rate when
        ``val/n_ssim`` stalls).
    channel_scales_um : dict
        Scale (µm) of the tanh applied to each distance channel before the network.
    patch_size : sequence of 3 ints
        Training patch (ZYX); prediction uses it as its default tile.
    spacing_zyx, study, content : optional
        What the model was trained on (for the model registry and for checks at prediction).
    normalization : str
        How intensities were normalised (prediction repeats it).
    channels_last : bool
        Keep the network's weights and activations in the ``channels_last_3d`` memory format
        (the same numbers, a different layout): 1.5x faster training steps on the CPU profile
        (scripts/bench_step.py). Predictions follow the checkpoint's choice.
    confidence : {'none', 'head'}
        ``head``: the network has a second output, a per-voxel confidence logit g, and the
        output is ``view + sigmoid(g) * (prediction - view)``: it falls back to the input view
        where the network is not sure. The head learns, besides the main loss on the blended
        output, where the prediction beats the view: a binary cross-entropy (weight
        ``confidence_weight``) against ``|prediction - target| < |view - target|`` (local means
        over 3×5×5 voxels, the prediction detached).
    fallback : {'none', 'difference', 'calibrated'}
        The input fallback ``fmc.predict`` and whole-volume scoring apply by default
        (:mod:`fmc.models.fallback`).
    network : str
        A name of the registry :data:`fmc.models.networks.NETWORKS` (``unet3d``,
        ``monai_basicunet``, ``monai_segresnet``, or one from another package's entry point of
        group ``fmc.networks``): recorded in the checkpoint, which rebuilds it by name.
    network_kwargs : dict, optional
        The network's own arguments beyond the settings above (its builder's signature).
    change_limit : float, optional
        For ``fallback=calibrated``: the largest local change the network made on its
        validation volumes (set at the end of training).
    compile : bool
        Train through ``torch.compile`` (:meth:`compile_network`). Loading a checkpoint never
        compiles (:func:`fmc.models.checkpoint.load_fusion_module` passes ``compile=False``).
    averaging : str
        A name of :data:`fmc.models.weight_averaging.AVERAGINGS`: ``none``, or ``ema`` (an
        exponential moving average of the weights, updated after every optimizer step); with
        ``averaging_kwargs`` for its builder. Validation judges, and checkpoints hold, the
        averaged weights (the trained ones travel beside them for resuming), so prediction
        uses them without a flag.
    tta : sequence of str
        Axes ('z', 'y', 'x') whose flips ``fmc.predict`` and ``fmc.challenge`` average by
        default (their ``tta: auto``), as do whole-volume validation, the fallback's calibration
        and the test; empty for none (2^k forward passes per tile).
    """

    def __init__(self, channels: Sequence[str] = ("raw_image", "surface_distance"),
                 out_channels: int = 1, features: int = 16, depth: int = 3,
                 norm: str = "instance", out_activation: str = "none", residual: bool = False,
                 negative_slope: float = 0.2, loss: str = "ssim_l1",
                 loss_kwargs: dict | None = None, optimizer: str = "radam", lr: float = 1e-3,
                 weight_decay: float = 0.0, scheduler: str = "none",
                 channel_scales_um: dict | None = None,
                 patch_size: Sequence[int] = (64, 256, 256),
                 spacing_zyx: Sequence[float] | None = None, study: int | None = None,
                 content: str | None = None,
                 normalization: str = "percentile (2, 99.8) per volume, not clipped",
                 image_panel: bool = True, channels_last: bool = False,
                 confidence: str = "none", confidence_weight: float = 0.1,
                 fallback: str = "none", change_limit: float | None = None,
                 network: str = "unet3d", network_kwargs: dict | None = None,
                 compile: bool = False, averaging: str = "none",
                 averaging_kwargs: dict | None = None, tta: Sequence[str] = ()):
        super().__init__()
        if confidence not in CONFIDENCES:
            raise ValueError(f"confidence={confidence!r}: choose one of {', '.join(CONFIDENCES)}")
        self.save_hyperparameters()
        self.net = build_network(network, network_kwargs, in_channels=len(channels),
                                 out_channels=out_channels + (confidence == "head"),
                                 features=features, depth=depth, norm=norm,
                                 negative_slope=negative_slope, out_activation=out_activation,
                                 residual=residual)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last_3d)
        if compile:
            self.compile_network()
        self.loss_fn = build_loss(loss, **(loss_kwargs or {}))
        self.val_n_ssim = PooledPatchNSSIM()
        self.test_n_ssim = PooledPatchNSSIM()
        self._panel_batch: dict[str, torch.Tensor] | None = None
        # Not a submodule: the average is saved as the checkpoint's state_dict, not beside it.
        self._averager = build_averager(averaging, averaging_kwargs)
        self._evaluating = ExitStack()

    @property
    def in_channels(self) -> int:
        """Number of input channels the network expects."""
        return len(self.hparams.channels)

    @property
    def required_divisor(self) -> int:
        """Each spatial side of an input must be a multiple of this (the network's)."""
        return int(self.net.required_divisor)

    def compile_network(self) -> None:
        """Run the network through ``torch.compile`` from now on.

        The compiled wrapper is kept outside the module's children, so checkpoints hold the
        plain network's weights (no ``_orig_mod.`` keys) and load without compiling:
        prediction decides for itself (``compile=true``).
        """
        self.__dict__["_compiled_net"] = torch.compile(self.net)

    @property
    def compiled(self) -> bool:
        """Whether :meth:`compile_network` was called."""
        return "_compiled_net" in self.__dict__

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(inputs)[0]

    def forward_parts(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None,
                                                            torch.Tensor | None]:
        """The output, and with a confidence head the raw prediction and the confidence logit."""
        if self.hparams.get("channels_last") and inputs.ndim == 5:
            inputs = inputs.contiguous(memory_format=torch.channels_last_3d)
        out = self.__dict__.get("_compiled_net", self.net)(inputs)
        if self.hparams.get("confidence", "none") != "head":
            return out, None, None
        return confidence_blend(inputs, out, self.net.residual)

    def _confidence_loss(self, prediction: torch.Tensor, logit: torch.Tensor,
                         target: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """BCE of the confidence logit against "the prediction beats the view here"."""
        def local(values: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.avg_pool3d(values, (3, 5, 5), stride=1, padding=(1, 2, 2),
                                                  count_include_pad=False)

        with torch.no_grad():
            better = (local((prediction.detach() - target).abs())
                      < local((view - target).abs())).float()
        return torch.nn.functional.binary_cross_entropy_with_logits(logit.float(), better)

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        inputs, target = batch["input"], batch["target"]
        prediction, raw_prediction, logit = self.forward_parts(inputs)
        loss, parts = self.loss_fn(prediction, target, inputs[:, :1])
        if logit is not None:
            confidence_loss = self._confidence_loss(raw_prediction, logit, target, inputs[:, :1])
            loss = loss + float(self.hparams.confidence_weight) * confidence_loss
            parts = {**parts, "confidence_bce": confidence_loss.detach()}
        batch_size = inputs.shape[0]
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True,
                 batch_size=batch_size, sync_dist=stage != "train")
        for name, value in parts.items():
            self.log(f"{stage}/{name}", value, on_step=False, on_epoch=True,
                     batch_size=batch_size, sync_dist=stage != "train")
        if stage != "train":
            # Pooled patch N_SSIM with the training SSIM (fmc.models.patch_metric): a cheap stand-in
            # for the challenge metric to select checkpoints with.
            metric = self.val_n_ssim if stage == "val" else self.test_n_ssim
            metric.update(prediction, target, inputs[:, :1])
            self.log(f"{stage}/n_ssim", metric, on_step=False, on_epoch=True, prog_bar=True,
                     batch_size=batch_size)
            if stage == "val" and self._panel_batch is None:
                self._panel_batch = {"input": inputs[:1, :1].detach().cpu(),
                                     "prediction": prediction[:1].detach().float().cpu(),
                                     "target": target[:1].detach().cpu()}
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    # -- weight averaging (fmc.models.weight_averaging) -----------------------------------------
    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.update_weight_average()

    def update_weight_average(self) -> None:
        """Fold the network's current weights into ``model.averaging``'s average (called after
        every optimizer step; nothing without averaging)."""
        if self._averager is not None:
            self._averager.update(self.net)

    def evaluation_weights(self) -> AbstractContextManager:
        """Inside the block the network holds the weights to judge: the average while
        ``model.averaging`` trains one, else its own (used by whole-volume validation)."""
        average = self._averager.average if self._averager is not None else None
        return weights_swapped(self.net, average)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._averager is None or not self._averager.average:
            return
        trained = checkpoint["state_dict"]
        averaged = dict(trained)
        averaged.update({f"net.{name}": value.detach().clone()
                         for name, value in self._averager.average.items()})
        checkpoint["state_dict"] = averaged
        checkpoint[TRAINED_WEIGHTS_KEY] = trained
        checkpoint[AVERAGE_STATE_KEY] = self._averager.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trained = checkpoint.get(TRAINED_WEIGHTS_KEY)
        if trained is None:
            return
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if fitting and self._averager is not None:
            # Resuming: the average goes back to the averager, training goes on from the
            # trained weights.
            average = {name[len("net."):]: value for name, value in checkpoint["state_dict"].items()
                       if name.startswith("net.")}
            self._averager.load_state(checkpoint.get(AVERAGE_STATE_KEY) or {}, average)
            checkpoint["state_dict"] = trained
        elif self._trainer is not None:
            # Testing a saved checkpoint: its state_dict is already the average it was saved with.
            self._averager = None

    def on_fit_end(self) -> None:
        # What stays in memory after training is the averaged model, as the checkpoints hold.
        if self._averager is not None and self._averager.average:
            self.net.load_state_dict(self._averager.average)
            self._averager = None

    def on_validation_epoch_start(self) -> None:
        self._panel_batch = None
        self._evaluating.enter_context(self.evaluation_weights())

    def on_validation_epoch_end(self) -> None:
        self._evaluating.close()
        if self._panel_batch is None or not self.hparams.image_panel or self.trainer.sanity_checking:
            return
        from fmc.models.panels import log_image_panel

        log_image_panel(self.trainer.loggers, self._panel_batch, step=self.global_step,
                        epoch=self.current_epoch)

    def configure_optimizers(self) -> Any:
        hp = self.hparams

        def total_steps() -> int:
            if self.trainer.max_steps and self.trainer.max_steps > 0:
                return int(self.trainer.max_steps)
            return max(1, int(self.trainer.estimated_stepping_batches))

        return build_optimization(self.parameters(), hp.optimizer, hp.lr, hp.weight_decay,
                                  hp.scheduler, total_steps)
