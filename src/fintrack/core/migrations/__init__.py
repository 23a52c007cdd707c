"""Versioned SQL migrations, applied in file-name order by ``fintrack db migrate``."""
