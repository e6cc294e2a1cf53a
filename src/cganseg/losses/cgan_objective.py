"""The weighted totals of cGAN-Seg (paper Eq. 16 and 17).

Generator + segmenter: ``D1_G + D2_S + 100 Rec_G + 100 Rec_S + 50 Id_G + 50 Id_S``.
Discriminators: ``0.5 (Real_D1 + Real_D2 + Fake_D1 + Fake_D2)``.
The weights are options (:class:`LossWeights`), recorded with each run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the options (and `cganseg --help`) read LossWeights
    import torch

#: Eq. 16's terms, each with the :class:`LossWeights` field that weighs it (by name: a new term
#: is one entry here and one weight below; the run's option ``w_<weight>`` follows by itself)
GS_WEIGHTS = {"d1_g": "adv_g", "d2_s": "adv_s", "rec_g": "rec_g", "rec_s": "rec_s",
              "id_g": "id_g", "id_s": "id_s"}  # fmt: skip
GS_TERMS = tuple(GS_WEIGHTS)
D_TERMS = ("real_d1", "real_d2", "fake_d1", "fake_d2")


def _weight(value: float, term: str) -> float:
    return field(default=value, metadata={"term": term})


@dataclass(frozen=True)
class LossWeights:
    """Weights of Eq. 16 (``adv_g`` .. ``id_s``) and Eq. 17 (``disc``); defaults are the paper's.
    Each is also a run option, ``w_`` + its name (cganseg.options)."""

    adv_g: float = _weight(1.0, "D1_G, Gen's adversarial term")
    adv_s: float = _weight(1.0, "D2_S, Seg's adversarial term")
    rec_g: float = _weight(100.0, "Rec_G, the image cycle")
    rec_s: float = _weight(100.0, "Rec_S, the mask cycle")
    id_g: float = _weight(50.0, "Id_G, Gen on paired masks")
    id_s: float = _weight(50.0, "Id_S, Seg on paired images")
    disc: float = _weight(0.5, "the discriminators' loss (Eq. 17)")

    def ramped(self, factor: float) -> LossWeights:
        """These weights with the synthetic-cycle and adversarial terms of Eq. 16 (Rec_G, Rec_S,
        D1_G, D2_S) times ``factor``; the paired Id_G and Id_S keep theirs (issue 17)."""
        if factor == 1.0:
            return self
        return replace(self, adv_g=self.adv_g * factor, adv_s=self.adv_s * factor,
                       rec_g=self.rec_g * factor, rec_s=self.rec_s * factor)  # fmt: skip


def generator_segmenter_loss(terms: dict[str, torch.Tensor], w: LossWeights) -> torch.Tensor:
    """Eq. 16 from the terms ``d1_g, d2_s, rec_g, rec_s, id_g, id_s``.

    A term the trainer skipped because it cannot change any weight (D2_S under argmax, a cycle
    of weight 0) is absent and adds nothing, so the logged total then leaves it out.
    """
    return sum(getattr(w, GS_WEIGHTS[k]) * terms[k] for k in GS_TERMS if k in terms)


def discriminator_loss(terms: dict[str, torch.Tensor], w: LossWeights) -> torch.Tensor:
    """Eq. 17 from the terms ``real_d1, real_d2, fake_d1, fake_d2`` (D2's absent when skipped)."""
    return w.disc * sum(terms[k] for k in D_TERMS if k in terms)
