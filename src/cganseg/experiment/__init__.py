"""k-fold cross-validation of the paper's scenarios (``cganseg experiment``)."""
