"""MangaAssist: an AI shopping assistant for manga, and the delivery system that ships it.

Layers (imports go downward only, checked by import-linter):
``cli`` -> ``delivery`` -> ``chatbot`` -> ``platform`` -> ``core``.
"""

__version__ = "0.1.0"
