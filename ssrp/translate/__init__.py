"""The translate stage: caption paraphrases by back-translation through German and Russian (fairseq WMT19).

Modules (config, stage, models, tiny, cli: the shape of every stage package):

* ``config``: ``TranslateConfig`` (its defaults argued in docs/translate.md);
* ``stage``: ``BackTranslator`` (load(), then __call__([(caption_id, image_id, text)]) -> records or a
  DeadLetter each); ``decode``: batched sampling and beam search on fairseq's generator;
* ``models``: the official WMT19 single models (``SOURCE``), their layout and ``load_hub``; ``trust``: which
  legacy checkpoints may be unpickled; ``tiny``: tiny random models in the same files;
* ``cli``: ``ssrp translate`` (captions -> JSON lines).
"""
