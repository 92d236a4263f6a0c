"""SSRP pretraining: the three variants (Share, Visual, Cross) and the two-stage trainer.

Modules (each imports only what it needs; nothing runs at import):

* ``config``: frozen configs with the paper's settings (``make_config(stage, variant, preset, overrides)``);
* ``model``: embeddings, intra- and inter-modality encoders (``SSRPEncoder``);
* ``heads``: stage-1 heads (``Stage1Model``), probes and projection heads (``Stage2Heads``);
* ``losses``: Eq. 3-7 as (sum, count) terms; ``metrics``: MST and UUAS;
* ``bert``: BERT initialisation, the ``bert`` model source and ``build_tiny_bert``;
* ``data``: datasets over corpus shards, collate, length-bucketing sampler;
* ``steps`` / ``checkpoint`` / ``loop``: one step, atomic checkpoints, the run; ``distributed``: DDP;
* ``cli``: ``ssrp train stage1|stage2``.

See docs/training.md.
"""
