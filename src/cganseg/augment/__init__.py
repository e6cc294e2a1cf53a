"""Augmentations used inside cGAN-Seg training (DiffAugment for the image discriminator)."""
