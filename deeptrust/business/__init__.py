"""Business metrics: flag precision, recall, reviewer agreement, search quality."""
