"""KV-cache methods (kind ``cache``): evict or quantize the cache once a prefill is read (see :mod:`.base`)."""
