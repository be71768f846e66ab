"""Recipes: the TOML schema and its loading (extends, --set, errors naming the key)."""
