"""Least-squares GAN loss (the paper's MSE adversarial terms, Eq. 6-7 and 10-11, 17).

LSGAN (Mao et al. 2017) replaces the log loss by a squared error to the target label 1 (real) or
0 (fake); it gives non-vanishing gradients for samples far from the decision boundary. The target
tensor is shaped from the discriminator's output, so PatchGAN outputs of any size work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lsgan_loss(prediction: torch.Tensor, real: bool) -> torch.Tensor:
    """MSE between the discriminator's patch outputs and 1 (``real``) or 0."""
    prediction = prediction.float()
    target = torch.ones_like(prediction) if real else torch.zeros_like(prediction)
    return F.mse_loss(prediction, target)
