"""SimCLR: encoder + projector, NT-Xent over two views with negatives from every process."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sslterm.methods.gather import all_gather_with_grad, rank_and_world
from sslterm.methods.losses import contrastive_topk, nt_xent
from sslterm.methods.registry import register_method


@register_method("simclr")
class SimCLR(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        head: nn.Module,
        temperature: float,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = head
        self.temperature = temperature
        # Online probe: sees detached features, so it never shapes the encoder.
        self.online_probe = nn.Linear(feature_dim, num_classes) if num_classes else None

    def forward(self, x1: Tensor, x2: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        b = x1.shape[0]
        h = self.encoder(torch.cat([x1, x2]))
        z = self.projector(h)
        rank, _ = rank_and_world()
        everything = all_gather_with_grad(z)
        loss, logits, positive = nt_xent(
            z[:b], z[b:], self.temperature, candidates=everything, offset=rank * 2 * b
        )
        out = {"loss": loss, "ssl_loss": loss.detach(), "logits": logits, "positive": positive}
        if self.online_probe is not None and labels is not None:
            probe_logits = self.online_probe(h[:b].detach().float())
            probe_loss = nn.functional.cross_entropy(probe_logits, labels)
            out["loss"] = loss + probe_loss
            out["probe_correct"] = (probe_logits.argmax(1) == labels).sum()
        return out

    @staticmethod
    def metrics(out: dict[str, Tensor]) -> dict[str, Tensor]:
        return contrastive_topk(out["logits"], out["positive"])
