"""The IR: a networkx DiGraph per graph, one node per operation."""

from graphdl.ir.graph import IR, new_ir
from graphdl.ir.printer import format_ir

__all__ = ["IR", "format_ir", "new_ir"]
