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


def test_aliases_keep_the_kernels_order_for_perf_to_choose_from():
    """perf names an address by one of the aliases there (memset, __memset,
    __pi_memset): which one depends on their order, so the kept lines keep the kernel's."""
    from mixedstack.record.keep import address_of, kept_symbols

    text = (b"ffffffff81000000 T _text\n"
            b"ffffffff82254380 T memset\nffffffff82254380 T __memset\nffffffff82254380 T __pi_memset\n"
            b"ffffffff822543a0 t __pfx_memset_orig\nffffffff822543b0 t memset_orig\n")
    symbols = sorted(text.split(b"\n"), key=address_of)
    kept = kept_symbols(symbols, text, [0xFFFFFFFF8225438B])
    assert kept == (b"ffffffff81000000 T _text\n"
                    b"ffffffff82254380 T memset\nffffffff82254380 T __memset\nffffffff82254380 T __pi_memset\n"
                    b"ffffffff822543a0 t __pfx_memset_orig\n")
