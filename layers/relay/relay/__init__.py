"""Domain code of the pairing relay, shipped to every function as a Lambda layer."""
