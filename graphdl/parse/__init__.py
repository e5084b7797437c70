"""Source text -> syntax tree (`graphdl.parse.ast`), with syntax errors in words."""

from graphdl.parse.parser import parse_source

__all__ = ["parse_source"]
