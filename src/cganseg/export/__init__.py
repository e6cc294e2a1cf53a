"""Trained models for other tools: BioImage Model Zoo packages (issue 19)."""
