"""prunedge pipeline: data, models, training, pruning, shrinking and CSR."""
