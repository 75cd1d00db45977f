"""Experiment drivers on top of the library: they train, sample and score; nothing below imports them."""
