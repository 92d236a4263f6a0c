"""Which stage provides which model. Each entry points at the stage's own module, imported only
when that model is fetched or built."""

# name -> "module:attribute" of a hub.ModelSource
SOURCES: dict[str, str] = {
}

# name -> "module:function(models_dir) -> dict": builds that stage's tiny model(s) under models_dir,
# in the same layout ``ssrp models fetch`` gives the real ones. Built in this order.
TINY_BUILDERS: dict[str, str] = {
}
