"""The driver's side of Spark integration: session helpers, the plugin's registry, ``PSContext``."""
