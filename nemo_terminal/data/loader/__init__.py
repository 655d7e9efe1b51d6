"""Training-time data: the data module, sample order and THD micro-batches read from the store."""
