"""Developer tools: local servers for tests and the demo; the runtime never imports them."""
