"""Learning: backbones, embeddings, the classifier head, scores and selection."""
