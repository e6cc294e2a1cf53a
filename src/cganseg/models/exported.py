"""A segmenter whose output is what a user of another tool can read: probabilities, not logits.

Consumers of a BioImage Model Zoo package (deepImageJ, QuPath, ilastik, bioimageio.core) run the
network and the package's declared processing, nothing of cganseg's own. Not all of them apply
the spec's ``softmax`` post-processing, so the exported network ends in it: class
probabilities (softmax over the channels) for class models, and for flow models the flows
(dy, dx) unchanged beside the cell probability (sigmoid of its logit). Both weight formats of a
package (TorchScript and the state dict rebuilt by ``ProbabilityNet(**kwargs)``) are this module.
"""

from __future__ import annotations

import torch
from torch import nn

from cganseg.models.registry import build_segmenter

#: what the network's output channels hold, by the run's instance mode
OUTPUT_KINDS = ("classes", "flows")


class ProbabilityNet(nn.Module):
    """The segmenter ``build_segmenter(name, in_channels, n_classes, width)`` (its weights under
    ``net.``) followed by the probability head of ``output`` (:data:`OUTPUT_KINDS`)."""

    def __init__(
        self, name: str, in_channels: int, n_classes: int, width: int, output: str = "classes"
    ) -> None:
        super().__init__()
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
        self.net = build_segmenter(name, in_channels, n_classes, width)
        self.flows = output == "flows"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.flows:
            return torch.cat([out[:, :2], torch.sigmoid(out[:, 2:])], dim=1)
        return torch.softmax(out, dim=1)
