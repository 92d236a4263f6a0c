"""Image captioning with Up-Down on SSRP-Visual's refined object features (the paper's Table 5).

Modules (imported on use; nothing heavy happens at import time):

* ``config``: frozen settings with the Up-Down / self-critical defaults (``make_config(preset, overrides)``);
* ``data``: the Karpathy split file (``dataset_coco.json``), batches of images with their captions;
* ``vocab``: the vocabulary of the training split (count >= 5, captions cut to 16 words);
* ``features``: attention features per image from a corpus or BUTD features, optionally with
  SSRP-Visual's refined object states and relations from a stage-2 checkpoint, cached in HDF5;
* ``model``: Up-Down (top-down attention LSTM + language LSTM), teacher-forced loss, greedy and sampled decoding;
* ``beam``: batched beam search; ``cider``: vectorised CIDEr-D (the SCST reward, in-process);
* ``scst``: the self-critical step; ``train``: the run (cross-entropy, then SCST; resumable);
* ``evaluate``: COCO caption metrics through pycocoevalcap, the results JSON;
* ``split``: a Karpathy-format file from COCO caption annotations; ``cli``: ``ssrp caption ...``.

See docs/caption.md.
"""
