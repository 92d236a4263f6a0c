"""Synthetic samples in the layouts of the real datasets (the demo and the tests use them)."""

from ssrp.sample.coco import SampleConfig, write_sample

__all__ = ["SampleConfig", "write_sample"]
