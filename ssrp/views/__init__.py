"""The views stage: the 14 visual views of paper Table 2 from two backbone passes per image.

Modules (the package's shape is every stage's: config, stage, cli; its detector is the features stage's):

* ``config``: ``ViewsConfig``, ``ALL_VIEWS``, ``TABLE2``, ``view_counts``;
* ``stage``: ``ViewAugmenter`` (load(), then __call__(decoded images) -> 14 ImageRecords or a DeadLetter each);
* ``cli``: ``ssrp views``, a preset of ``ssrp build``.

See docs/views.md.
"""
