"""What record keeps beside a recording (record/keep.py): the kernel's symbols its
samples name, and the vDSO that perf record -N leaves out of the build-id cache,
so that stacks through the vDSO still unwind."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import perf_script_text
from conftest import Folded, interpreter, mixedstack, record_and_fold
from mixedstack.perf import command as perf


SPIN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    sum(i * i for i in range(500))\n"


def test_the_recording_keeps_the_kernel_symbols_its_samples_name(phases):
    data, folded = phases
    kallsyms = list(Path(str(data) + ".d", "buildid", "[kernel.kallsyms]").glob("*/kallsyms"))
    assert len(kallsyms) == 1
    kept = kallsyms[0].read_bytes().count(b"\n")
    assert 3 < kept < Path("/proc/kallsyms").read_bytes().count(b"\n") / 20
    # perf script names every kernel frame as it does with all of /proc/kallsyms
    buildid = str(data) + ".d/buildid"
    with_kept = subprocess.run(perf.script_command(str(data), buildid, kallsyms=str(kallsyms[0])),
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True).stdout
    assert with_kept.count(b"[kernel.kallsyms]") > 30  # kernel frames to name (hundreds on a free CPU)
    assert with_kept == perf_script_text(data, Path(buildid))
    assert folded.total(lambda frames: any(frame.endswith("_[k]") for frame in frames)) == 0  # no --kernel
    again = mixedstack("fold", "--kernel", str(data))
    assert Folded(again.stdout).total(lambda frames: any("entry_SYSCALL" in f for f in frames)) > 0


@pytest.mark.parametrize("version", [(3, 13), (3, 11)])
def test_stacks_through_the_vdso_unwind(perf_ok, tmp_path, version):
    code = "import time\nend = time.time() + 1.5\nwhile time.time() < end:\n    pass\n"
    recorded, folded = record_and_fold(tmp_path, [interpreter(version), "-c", code], "--kernel")
    assert recorded.returncode == 0, recorded.stderr
    through = folded.total(lambda frames: any(f.startswith("__vdso_clock_gettime") for f in frames))
    rooted = folded.total(lambda frames: any(f.startswith("__vdso_clock_gettime") for f in frames)
                          and any(f.startswith("<module>") for f in frames))
    assert through > 0.05 * folded.total(), (through, folded.total())
    # without the vDSO in the build-id cache, 3% of these were (perf -N alone)
    assert rooted >= 0.95 * through, (rooted, through)
