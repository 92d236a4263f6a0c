"""Evaluation of trained SSRP models: probe metrics, Fig. 3/4 figures, retrieval, feature export.

Modules (imported on use; nothing heavy happens at import time):

* ``metrics``: UUAS, Hewitt's Spearman by sentence length, stability of relation matrices;
* ``inference``: ``ProbeModel`` runs a stage-2 checkpoint on corpus pairs;
* ``probe``, ``show``, ``retrieval``, ``export``: the ``ssrp eval probe | show | retrieve | export`` commands;
* ``figures``: the drawing code (matplotlib Agg and Pillow).
"""
