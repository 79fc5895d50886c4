"""The ``mangaassist`` command line (Typer + Rich)."""
