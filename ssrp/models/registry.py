"""Which stage provides which model. Each entry points at the stage's own module, imported only
when that model is fetched or built."""

# name -> "module:attribute" of a hub.ModelSource
SOURCES: dict[str, str] = {
    "detector": "ssrp.features.hub:DETECTOR_SOURCE",
    "translation": "ssrp.augment.translation_models:SOURCE",
    "parser": "ssrp.parse.models:PARSER_SOURCE",
    "bert": "ssrp.train.bert:SOURCE",
}

# name -> "module:function(models_dir) -> dict": builds that stage's tiny model(s) under models_dir,
# in the same layout ``ssrp models fetch`` gives the real ones. Built in this order: the parser's
# tiny build writes a WordPiece vocabulary learned from the sample captions to bert/vocab.txt,
# which the tiny BERT then uses.
TINY_BUILDERS: dict[str, str] = {
    "detector": "ssrp.features.hub:build_tiny",
    "translation": "ssrp.augment.translation_models:build_tiny",
    "parser": "ssrp.parse.tiny:build_tiny",
    "bert": "ssrp.train.bert:build_tiny_bert",
}
