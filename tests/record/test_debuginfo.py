"""What record says about symbols (record/debuginfo.py): installed packages' stripped
extension modules are named once, in record's summary and in report's notes."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from mixedstack.record.debuginfo import stripped_packages, stripped_packages_note

NO_BUILD = "0" * 40


def test_stripped_extension_modules_of_installed_packages_are_named(tmp_path):
    if shutil.which("cc") is None or shutil.which("strip") is None:
        pytest.skip("needs cc and strip")  # both come with the compiler the agent builds with
    source = tmp_path / "m.c"
    source.write_text("static int helper(int x) { return x * 3; }\nint f(int x) { return helper(x) + 1; }\n")
    package = tmp_path / "venv" / "site-packages" / "pkg"
    package.mkdir(parents=True)
    named = package / "_named.cpython-313-x86_64-linux-gnu.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(named), str(source)], check=True)
    bare = package / "_bare.cpython-313-x86_64-linux-gnu.so"
    subprocess.run(["strip", "--strip-all", "-o", str(bare), str(named)], check=True)
    elsewhere = tmp_path / "libother.so.1"  # not an installed package's: the system's own notes cover those
    shutil.copy(bare, elsewhere)
    targeted = tmp_path / "target" / "yarl" / "_quoting_c.cpython-313-x86_64-linux-gnu.so"  # pip --target
    targeted.parent.mkdir(parents=True)
    shutil.copy(bare, targeted)
    files = [(NO_BUILD, str(path)) for path in (named, bare, elsewhere, targeted)]
    assert stripped_packages(files) == sorted([str(bare), str(targeted)])
    note = stripped_packages_note([str(bare)])
    assert note.startswith("1 extension module or library of installed packages has no symbols")
    assert "pkg/_bare.cpython-313-x86_64-linux-gnu.so" in note and "show as the file" in note
    assert stripped_packages_note([]) is None
    many = stripped_packages_note(["/v/site-packages/p/m%d.so" % i for i in range(5)])
    assert many.startswith("5 extension modules or libraries") and "p/m0.so, p/m1.so, p/m2.so, ..." in many
