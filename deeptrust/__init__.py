"""DeepTrust: the command line, the demo, and the orchestration of stage processes."""
