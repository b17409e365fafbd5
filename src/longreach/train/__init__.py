"""Long-context training: recipes (one file each under :mod:`.recipes`), local training data, and the training loop
that turns a model into a folder ``longreach eval --model`` loads. Nothing heavy is imported here."""
