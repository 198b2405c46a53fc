"""The moderation console and the search page (``deeptrust console``): people, not stages."""
