"""Training recipes, one file each: every module registers its recipe with
:func:`longreach.train.recipe.register_recipe`, and :data:`longreach.train.recipe.RECIPES` discovers this package on
first use."""
