"""Image quality: a digit classifier (classifier) and the scores built on it (metrics)."""
