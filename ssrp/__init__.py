"""ssrp: rebuild the SSRP pretraining corpus from raw MSCOCO and train SSRP on it."""

__version__ = "0.1.0"
