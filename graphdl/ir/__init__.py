"""The IR: a networkx DiGraph per graph, one `Node` record per operation."""

from graphdl.ir.graph import (
    IR,
    IRError,
    add_delay,
    add_node,
    clone,
    dataflow,
    is_delay,
    new_ir,
    node,
    nodes,
    order,
    remove_node,
    remove_operand,
    replace_uses,
    users,
)
from graphdl.ir.node import STRUCTURAL_OPS, Node
from graphdl.ir.printer import format_ir, format_node
from graphdl.ir.verify import check_ir, verify

__all__ = ["IR", "IRError", "Node", "STRUCTURAL_OPS", "add_delay", "add_node", "check_ir",
           "clone", "dataflow", "format_ir", "format_node", "is_delay", "new_ir", "node", "nodes", "order",
           "remove_node", "remove_operand", "replace_uses", "users", "verify"]
