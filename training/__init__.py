"""Training code for the project's own models; never imported by the stages."""
