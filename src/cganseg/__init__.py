"""cganseg: cell segmentation from small annotated sets with cycle GANs."""
__version__ = "0.1.0"
