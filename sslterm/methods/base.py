"""The method interface: what the engine may ask of a self-supervised method, and no more.

A method is an ``nn.Module`` that the engine drives without knowing which one it is:

- ``views()`` declares the augmented views one training image yields (how many, their
  size and crop scales), so the data path can build them, multi-crop included;
- ``training_step(views)`` returns the loss to back-propagate, the encoder features of the
  first view and named scalars to log;
- ``val_metrics(views)`` scores held-out views with this process's batch alone: it runs
  under ``no_grad`` on every rank independently, so it must not call a collective;
- ``set_progress(step, steps_per_epoch, total_steps)`` runs before each training forward
  (for a forward that follows the schedule; a no-op by default);
- ``after_step(step, total_steps)`` runs after each optimizer step (momentum teachers,
  schedules) and returns scalars to log;
- ``eval_encoder()`` is the backbone that kNN, the linear probe and the export evaluate.

Construction goes through ``create(encoder, feature_dim, config)``, where ``config`` is the
method's own profile section (``[simclr]``, ``[byol]``, ...). The online probe is the
engine's: it attaches a linear layer as the ``online_probe`` submodule and ``forward``
(this base class's, which the engine calls) trains it on the detached features, inside the
one forward pass that DDP sees, so checkpoints keep one state dict. Methods never read it.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from sslterm.data.views import View
from sslterm.methods.gather import all_gather_with_grad
from sslterm.methods.losses import negative_cosine, view_agreement

TWO_GLOBAL_VIEWS = (View(), View())


class Method(nn.Module):
    """Base class of every method; see the module docstring for the contract."""

    encoder: nn.Module
    online_probe: nn.Module | None
    # Keys of the method's profile section that shape its saved tensors: each checkpoint
    # records them, and a resume that changes one is refused before training starts.
    shape_keys: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        # an instance attribute, not a class one: nn.Module moves an assigned layer into
        # _modules, where a class-level None would shadow it on every read. The engine's
        # layer, assigned after create(), comes last in the state dict, as it always did
        self.online_probe = None

    @classmethod
    def create(cls, encoder: nn.Module, feature_dim: int, config: Any) -> Method:
        """The method around ``encoder`` (whose pooled features have ``feature_dim``
        channels), configured by its profile section."""
        raise NotImplementedError

    def views(self) -> tuple[View, ...]:
        return TWO_GLOBAL_VIEWS

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        """``{"loss": scalar with grad, "features": [B, feature_dim] encoder features of
        views[0], **scalars}``; scalars are detached 0-d tensors to log."""
        raise NotImplementedError

    def forward(self, views: list[Tensor], labels: Tensor | None = None) -> dict[str, Tensor]:
        """The method's step plus, where the engine attached one and labels are given, the
        online probe on detached features: ``loss`` then includes the probe's loss,
        ``ssl_loss`` is the method's alone and ``probe_correct`` counts right answers."""
        out = self.training_step(views)
        out["ssl_loss"] = out["loss"].detach()
        if self.online_probe is not None and labels is not None:
            logits = self.online_probe(out["features"].detach().float())
            out["loss"] = out["loss"] + nn.functional.cross_entropy(logits, labels)
            out["probe_correct"] = (logits.argmax(1) == labels).sum()
        return out

    def val_metrics(self, views: list[Tensor]) -> dict[str, Tensor]:
        """Batch means of detached 0-d tensors (``loss`` at least), local to this process."""
        raise NotImplementedError

    def set_progress(self, step: int, steps_per_epoch: int, total_steps: int) -> None:
        """Called before every training forward with the optimizer step about to run
        (0-based, of ``total_steps``). Methods whose forward follows the schedule (DINO's
        teacher temperature and frozen last layer) read it here; the engine restores the
        position on resume, so it needs no state of its own."""

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Called after optimizer step ``step`` (0-based) of ``total_steps``."""
        return {}

    def eval_encoder(self) -> nn.Module:
        return self.encoder

    def fixed_lr_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the peak lr throughout, outside the warmup and decay
        (SimSiam's predictor); none by default."""
        return []


class PredictorMethod(Method):
    """Two views through encoder, projector and predictor; each prediction is pulled to a
    target for the other view (BYOL, SimSiam). Subclasses say what the targets are
    (``targets``) and may rescale a pair's loss (``pair_loss``); the loss sums both pairs."""

    shape_keys = ("projector_hidden_dim", "projector_dim", "predictor_hidden_dim")

    def __init__(self, encoder: nn.Module, projector: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.predictor = predictor

    def targets(self, views: list[Tensor], z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
        """What the predictions of views 0 and 1 are pulled to (no gradient flows into it)."""
        raise NotImplementedError

    def pair_loss(self, p: Tensor, target: Tensor) -> Tensor:
        """One view's prediction against the other view's target: half the negative cosine
        (SimSiam's paper and lightly: the sum over both pairs is their mean)."""
        return 0.5 * negative_cosine(p, target)

    def _branch(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.encoder(x)
        z = self.projector(h)
        return h, z, self.predictor(z)

    def _loss(self, views: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        (h1, z1, p1), (_, z2, p2) = self._branch(views[0]), self._branch(views[1])
        t1, t2 = self.targets(views, z1, z2)
        loss = self.pair_loss(p1, t2) + self.pair_loss(p2, t1)
        return loss, h1, z1, z2

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        loss, h1, _, _ = self._loss(views)
        return {"loss": loss, "features": h1}

    def val_metrics(self, views: list[Tensor]) -> dict[str, Tensor]:
        loss, _, z1, z2 = self._loss(views)
        return {"loss": loss.detach(), **view_agreement(z1, z2)}


class GlobalBatchMethod(Method):
    """Two views through encoder and projector, scored by a loss of batch statistics
    (Barlow Twins, VICReg). Training gathers both views' embeddings from every process (with
    gradients) and computes the same loss on each, so N processes train like one on the
    whole batch; validation scores this process's batch alone. Subclasses give the loss
    (``terms``): ``{"loss": ..., **named detached terms}``."""

    shape_keys = ("projector_hidden_dim", "projector_dim")

    def __init__(self, encoder: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector

    def terms(self, z1: Tensor, z2: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def _embed(self, views: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        h1 = self.encoder(views[0])
        return h1, self.projector(h1), self.projector(self.encoder(views[1]))

    def training_step(self, views: list[Tensor]) -> dict[str, Tensor]:
        h1, z1, z2 = self._embed(views)
        return {**self.terms(all_gather_with_grad(z1), all_gather_with_grad(z2)), "features": h1}

    def val_metrics(self, views: list[Tensor]) -> dict[str, Tensor]:
        """The loss and its terms over this process's batch, and the views' agreement."""
        _, z1, z2 = self._embed(views)
        out = self.terms(z1, z2)
        return {**out, "loss": out["loss"].detach(), **view_agreement(z1, z2)}
