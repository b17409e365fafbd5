"""RoPE position methods, one file each (see :mod:`.base`)."""
