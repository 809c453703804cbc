"""Native frame names exactly as FlameGraph's stackcollapse-perf.pl writes them.

One perf frame line becomes one or more names (`a->b` is an inline chain in some
perf versions). Options: --kernel (`_[k]`), --jit (`_[j]`, perf-PID.map frames),
--addrs (`[dso <pc>]` where the symbol is unknown). Standard library only.
"""
from __future__ import annotations

import re
from typing import List

from mixedstack.model import Frame

OFFSET = re.compile(r"\+0x[\da-f]+$", re.ASCII)
# Everything after the first "(" is noise, except "(anonymous namespace)".
AFTER_PAREN = re.compile(r"\((?!anonymous namespace\)).*", re.ASCII | re.DOTALL)
GO_METHOD = re.compile(r"\.\(.*\)\.", re.ASCII | re.DOTALL)
KERNEL_DSO = re.compile(r"(^\[|vmlinux$)", re.ASCII)
JIT_DSO = re.compile(r"/tmp/perf-\d+\.map", re.ASCII)


class NativeNames:
    """Turns a Frame into the name(s) stackcollapse-perf.pl would print."""

    def __init__(self, kernel: bool = False, jit: bool = False, addrs: bool = False):
        self.kernel = kernel
        self.jit = jit
        self.addrs = addrs

    def symbol(self, frame: Frame) -> str:
        """The symbol without its +0xOFFSET."""
        return OFFSET.sub("", frame.symbol)

    def __call__(self, frame: Frame, label: str) -> List[str]:
        rawfunc = self.symbol(frame)
        if rawfunc.startswith("("):  # a process name, not a function
            return []
        mod = frame.dso
        names: List[str] = []
        parts = rawfunc.split("->")
        while parts and parts[-1] == "":  # Perl's split drops trailing empty fields
            parts.pop()
        for func in parts:
            if func == "[unknown]":
                if mod != "[unknown]":  # use the module's file name instead
                    func = mod.rsplit("/", 1)[-1]
                else:
                    func = "unknown"
                func = "[%s <%s>]" % (func, frame.pc) if self.addrs else "[%s]" % func
            func = func.replace(";", ":")
            if not GO_METHOD.search(func):
                func = AFTER_PAREN.sub("", func, count=1)
            func = func.replace('"', "").replace("'", "")
            if label.startswith("java") and "/" in func and func.startswith("L"):
                func = func[1:]  # condense Java signatures: Lorg/foo; -> org/foo
            if names:
                if "_[i]" not in func:
                    func += "_[i]"
            elif self.kernel and KERNEL_DSO.search(mod) and "unknown" not in mod:
                func += "_[k]"
            elif self.jit and JIT_DSO.search(mod):
                if "_[j]" not in func:
                    func += "_[j]"
            names.append(func)
        return names
