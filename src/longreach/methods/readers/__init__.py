"""Reader methods: own the loop over inputs longer than the model's window."""
