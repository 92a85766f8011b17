"""The unit of a benchmark: one problem and the implementations timed on it."""
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional


@dataclass
class Impl:
    """One implementation of a problem: `setup()` allocates inputs and returns a forward
    closure; its output (a tensor) is backpropagated for the backward timing."""
    name: str
    setup: Callable[[], Callable]
    backward: bool = True


@dataclass
class Case:
    suite: str           # "na", "lightning", ...
    problem: str         # a readable name
    flops_fwd: float     # work actually needed (DESIGN.md §9)
    impls: list
    bwd_factor: float = 2.5
    x: Dict[str, float] = field(default_factory=dict)  # plot coordinates (window, N, ...)
    bytes_fwd: Optional[float] = None  # memory-bound problems: bytes the forward must move
