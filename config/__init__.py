"""Configuration: one pydantic model per YAML section, loaded with line numbers.

Each subsystem's sections live in a module named for it (``camera``,
``recognition``, ``hardware``, ``mqtt``, ``central``); ``door`` and ``central``
compose them into the two files facilities staff edit.
"""
