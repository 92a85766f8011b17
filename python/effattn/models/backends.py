"""A process-wide choice among named attention backends, switched for the duration of a
with-block (the benchmarks run one model with effattn and with a peer's kernels)."""
import contextlib


class BackendSwitch:
    def __init__(self, kind, names, default):
        self.kind = kind
        self.names = tuple(names)
        self.current = default

    @contextlib.contextmanager
    def use(self, name):
        """Within the block, `current` is `name`; the previous one is restored on exit (also
        on an exception)."""
        if name not in self.names:
            raise ValueError(f"unknown {self.kind} backend {name!r}; available: {', '.join(self.names)}")
        previous, self.current = self.current, name
        try:
            yield
        finally:
            self.current = previous
