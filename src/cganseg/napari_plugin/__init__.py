"""The napari plugin (npe2 manifest ``napari.yaml``; the optional extra ``cganseg[napari]``):
segment an image layer with a trained run into a Labels layer, and generate an image from a
Labels layer with a trained cGAN-Seg generator (issue 19)."""
