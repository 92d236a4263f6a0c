"""Fine-tuning a pretrained SSRP on NLVR2, VQA and GQA (Sec. 4.1, Tables 3 and 4).

Modules (nothing runs at import):

* ``config``: frozen configs with LXMERT's fine-tuning settings (``make_config(task, preset, overrides)``);
* ``tasks``: LXMERT's task JSON files; ``images``: RoI features from an ssrp corpus or LXMERT TSVs;
* ``data``: tokenising, datasets and padded batches; ``heads``: [f_align ; fused R_v, R_w] and LXMERT's heads;
* ``checkpoint``: the pretrained inputs and the run's checkpoints; ``loop``: training, validation, best model;
* ``metrics``: the official metrics and submission files; ``predict``: ``ssrp predict`` / ``ssrp score``;
* ``sample``: a tiny synthetic task set in LXMERT's formats (demo, tests); ``cli``.

See docs/finetune.md.
"""
