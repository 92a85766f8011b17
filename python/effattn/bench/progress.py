"""A minimal progress bar on stderr (no dependency); silent when stderr is not a terminal,
so logs stay readable."""
import sys
import time


class Progress:
    def __init__(self, total, label="", stream=sys.stderr, width=28):
        self.total, self.label, self.stream, self.width = max(total, 1), label, stream, width
        self.done, self.start = 0, time.time()

    def step(self, what=""):
        self.done += 1
        if not self.stream.isatty():
            return
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.time() - self.start
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.0f}s {what[:40]:<40}")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
