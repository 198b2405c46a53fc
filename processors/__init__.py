"""The pipeline's stages: detect (+ embed), caption, tag, moderation router, search sink."""
