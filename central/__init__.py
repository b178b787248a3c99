"""The central collector: stores door events, owns the people registry, answers staff."""
