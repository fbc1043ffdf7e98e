"""Accuracy benchmark: score a labeled store through the real pipeline and compare with truth."""
