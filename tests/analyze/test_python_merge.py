"""The Python merge (PythonMerge via Folder) on real `perf script` texts with Python frames.

tests/data/python/*.txt are trimmed recordings of CPython 3.13 on perf 6.1 (each file's
header comment says how it was made). Their paths do not exist on disk, so Python
file names shorten to their basename. expected/NAME-OPT.txt is what the real
stackcollapse-perf.pl printed for NAME.txt: `--keep-interpreter` must match it.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from folding import fold, fold_text, read_text, split_lines
from mixedstack.analyze.fold import Folder
from mixedstack.analyze.fold import FoldOptions
from mixedstack.analyze.processors.python import shorten_path
from mixedstack.perf.parse import parse

from conftest import TESTS

DATA = TESTS / "data" / "python"
JIT = DATA / "perf-jit-3.13.txt"  # -X perf_jit, DWARF unwind, after perf inject --jit
FP = DATA / "perf-map-3.13-fp.txt"  # -X perf (perf map), frame-pointer unwind
RECURSION = DATA / "perf-map-3.13-fp-recursion.txt"

APP = "python3.13;<module> (app.py);main (app.py)"
KEY_UNDER_SORTED = "sort_work (app.py);builtin_sorted;list_sort;list_sort_impl;key (app.py)"
JIT_STARTUP = ("python3.13;_start;_dl_start;_dl_sysdep_start;dl_main;_dl_relocate_object;"
               "asm_exc_page_fault{k};exc_page_fault{k};handle_mm_fault{k};__handle_mm_fault{k};"
               "do_fault{k};copy_mc_enhanced_fast_string{k} 1001001")
FP_STARTUP = ("python3.13;__libc_start_call_main;Py_BytesMain;pymain_init;Py_InitializeFromConfig;"
              "pyinit_core.constprop.0;pycore_interp_init;_PyTypes_InitTypes;"
              "_PyStaticType_InitBuiltin;type_ready;insert_to_emptydict 1001001")
THREAD = ("python3.13{label};Thread._bootstrap (threading.py);Thread._bootstrap_inner (threading.py);"
          "Thread.run (threading.py);worker (app.py);spin (app.py);x_add;_PyLong_New;_PyObject_Malloc;"
          "asm_sysvec_apic_timer_interrupt{k};sysvec_apic_timer_interrupt{k};__irq_exit_rcu{k};"
          "handle_softirqs{k} 1001001")


def test_perf_jit_stacks_merge_into_python_frames():
    assert fold(JIT) == [
        APP + ";" + KEY_UNDER_SORTED + ";_PyLong_Multiply 1001001",
        APP + ";spin (app.py) 1001001",
        APP + ";write_work (app.py);os_write;_Py_write;__GI___libc_write;"
        "entry_SYSCALL_64_after_hwframe;do_syscall_64 1001001",
        # a thread stack perf could not unwind past its first trampoline: marked as cut there
        "python3.13;[truncated];spin (app.py);x_add 1001001",
        JIT_STARTUP.format(k=""),  # no Python frame: as stackcollapse-perf.pl
    ]


def test_frame_pointer_stacks_merge_into_python_frames():
    assert fold(FP) == [
        APP + ";" + KEY_UNDER_SORTED + " 1001001",
        APP + ";write_work (app.py);os_write;__GI___libc_write;entry_SYSCALL_64_after_hwframe;"
        "do_syscall_64;ksys_write;vfs_write 1001001",
        THREAD.format(label="", k=""),
        FP_STARTUP,
    ]


def test_kernel_frames_under_a_syscall_are_annotated():
    assert APP + ";write_work (app.py);os_write;_Py_write;__GI___libc_write;" \
        "entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k] 1001001" in fold(JIT, "kernel")
    assert APP + ";write_work (app.py);os_write;__GI___libc_write;entry_SYSCALL_64_after_hwframe_[k];" \
        "do_syscall_64_[k];ksys_write_[k];vfs_write_[k] 1001001" in fold(FP, "all")


def test_thread_keeps_its_pid_tid_and_drops_thread_startup():
    # start_thread;pythread_wrapper;thread_run;method_vectorcall are thread start-up
    assert THREAD.format(label="-4343/4345", k="") in fold(FP, "tid")
    assert THREAD.format(label="", k="_[k]") in fold(FP, "kernel")


def test_c_function_calling_back_into_python_is_kept():
    for path in (JIT, FP):
        assert any(KEY_UNDER_SORTED in line for line in fold(path)), path.name


def stackcollapse(path: Path, option: str):
    """What stackcollapse-perf.pl printed for this file (committed under expected/)."""
    return split_lines(read_text(DATA / "expected" / ("%s-%s.txt" % (path.stem, option or "plain"))))


@pytest.mark.parametrize("path,option,line", [
    (JIT, "kernel", JIT_STARTUP.format(k="_[k]")),
    (FP, "", FP_STARTUP),
    (FP, "tid", FP_STARTUP.replace("python3.13;", "python3.13-4343/4343;", 1)),
], ids=["jit-kernel", "fp-plain", "fp-tid"])
def test_stacks_without_python_are_folded_like_stackcollapse_perf(path, option, line):
    assert line in fold(path, option)
    assert line in stackcollapse(path, option)


@pytest.mark.parametrize("option", ["", "kernel", "jit", "tid"], ids=lambda o: o or "plain")
@pytest.mark.parametrize("path", [JIT, FP, RECURSION], ids=lambda p: p.stem)
def test_keep_interpreter_is_stackcollapse_perf(path, option):
    got = fold(path, option, keep_interpreter=True)
    assert sorted(got) == sorted(stackcollapse(path, option))
    assert any("py::" in line for line in got)


def test_keep_interpreter_shows_every_frame():
    assert (
        "python3.13;__libc_start_call_main;Py_BytesMain;Py_RunMain;_PyRun_AnyFileObject;"
        "_PyRun_SimpleFileObject;run_mod;run_eval_code_obj;PyEval_EvalCode;"
        "py::<module>:/srv/demo/app.py;_PyEval_EvalFrameDefault;PyObject_Vectorcall;"
        "py::main:/srv/demo/app.py;_PyEval_EvalFrameDefault;PyObject_Vectorcall;"
        "py::sort_work:/srv/demo/app.py;_PyEval_EvalFrameDefault;PyObject_Vectorcall;"
        "cfunction_vectorcall_FASTCALL_KEYWORDS;builtin_sorted;PyObject_Vectorcall;"
        "cfunction_vectorcall_FASTCALL_KEYWORDS;list_sort;list_sort_impl;PyObject_CallOneArg;"
        "py::key:/srv/demo/app.py;_PyEval_EvalFrameDefault 1001001") in fold(FP, keep_interpreter=True)


def test_folder_counts_samples_with_python():
    with open(JIT, encoding="latin-1", newline="\n") as lines:
        folder = Folder(FoldOptions()).add_all(parse(lines))
    assert (folder.samples, folder.python_samples, len(folder.stacks)) == (5, 4, 5)


def test_native_recursion_under_python_keeps_its_depth():
    # r_object recursing from one call site: identical consecutive frames are real frames
    assert fold(RECURSION) == [
        "python3.13;<module> (rec.py);load (rec.py);marshal_loads;read_object;"
        + "r_object;" * 6 + "memset@plt 1001001"]


# Default `perf script` fields print symbol offsets, also on perf-map frames.
OFFSETS = """\
python3.13 4343/4343  1037.552596:    1001001 cpu-clock:pppH:
\t          174564 _PyObject_Malloc+0x54 (/usr/lib/libpython3.13.so.1.0)
\t           8d503 _PyEval_EvalFrameDefault+0x1a93 (/usr/lib/libpython3.13.so.1.0)
\t    7f003f92eff6 py::Parser.parse:/srv/demo/pkg/parser.py+0x6 (/tmp/perf-4343.map)
\t           f5938 PyObject_Vectorcall+0x58 (/usr/lib/libpython3.13.so.1.0)
\t           8d88e _PyEval_EvalFrameDefault+0x1e1e (/usr/lib/libpython3.13.so.1.0)
\t    7f003f92eac6 py::<module>:<frozen runpy>+0x6 (/tmp/perf-4343.map)
\t          241270 PyEval_EvalCode+0xa0 (/usr/lib/libpython3.13.so.1.0)

"""


def test_python_frames_with_offsets():
    assert fold_text(OFFSETS) == [  # (a stack cut above PyEval_EvalCode)
        "python3.13;[truncated];<module> (<frozen runpy>);Parser.parse (parser.py);_PyObject_Malloc 1001001"]


ENTRY = "\t1 _start (/usr/bin/python3)"  # the process's entry: a complete stack


@pytest.mark.parametrize("symbol,name", [
    ("py::main:/srv/demo/app.py", "main (app.py)"),
    ("py::Outer.<locals>.inner:/srv/demo/app.py:42", "Outer.<locals>.inner (app.py)"),  # the agent's line
    ("py::<module>:<frozen importlib._bootstrap>", "<module> (<frozen importlib._bootstrap>)"),
    ("py::<lambda>:<string>", "<lambda> (<string>)"),
    ("py::f:/srv/demo/odd;name.py", "f (odd:name.py)"),
    ("py::f:", "f"),
])
def test_python_frame_names(symbol, name):
    assert fold_text("python3 7/7 1.0: 1 cpu-clock:\n\t85 %s (/tmp/jitted-7-1.so)\n%s\n\n" % (symbol, ENTRY)) \
        == ["python3;%s 1" % name]


def test_short_file_keeps_package_directories(tmp_path):
    package = tmp_path / "site-packages" / "pkg" / "sub"
    package.mkdir(parents=True)
    for folder in (package.parent, package):
        (folder / "__init__.py").write_text("")
    assert shorten_path(str(package / "mod.py")) == "pkg/sub/mod.py"
    assert shorten_path(str(package.parent.parent / "script.py")) == "script.py"
    assert shorten_path("<frozen os>") == "<frozen os>"
    # zipimport: the package path inside the archive, whether or not it exists here
    assert shorten_path("/opt/pip-24.0-py3-none-any.whl/pip/_vendor/idna/__init__.py") == "pip/_vendor/idna/__init__.py"
    assert shorten_path("/srv/app.zip/hot_a/__init__.py") == "hot_a/__init__.py"
    # the agent's `py::QUALNAME:FILE:LINE`: the shortened file, named as CPython's own
    # trampolines name it (no line), so that one function has one name in every mode
    assert fold_text("python3 7/7 1.0: 1 cpu-clock:\n\t85 py::run:%s/mod.py:7 (/tmp/jitted-7-1.so)\n%s\n\n"
                     % (package, ENTRY)) == ["python3;run (pkg/sub/mod.py) 1"]


def test_a_cpp_py_namespace_symbol_is_not_a_python_frame():
    text = ("server 10/10 [000] 1.0: 1 cycles:\n"
            "\t55d000001000 py::Interpreter::eval(py::Object const&)+0x10 (/usr/bin/server)\n"
            "\t55d000000f00 main+0x30 (/usr/bin/server)\n\n")
    assert fold_text(text) == ["server;main;py::Interpreter::eval 1"]


def test_a_native_caller_above_python_is_kept_but_thread_startup_is_not():
    # a native thread of libworker.so calls back into Python through ctypes
    text = ("app 7/9 1.0: 1 cpu-clock:\n"
            "\t1a0 _PyEval_EvalFrameDefault+0x10 (/usr/lib/libpython3.13.so.1.0)\n"
            "\t85 py::callback:/srv/cb.py+0x5 (/tmp/jitted-7-3.so)\n"
            "\t2a0 py_trampoline_evaluator+0x70 (/usr/lib/libpython3.13.so.1.0)\n"
            "\t3a0 _PyObject_MakeTpCall+0x30 (/usr/lib/libpython3.13.so.1.0)\n"
            "\t4a0 _CallPythonObject+0x90 (/usr/lib/python3.13/lib-dynload/_ctypes.so)\n"
            "\t5a0 closure_fcn+0x20 (/usr/lib/python3.13/lib-dynload/_ctypes.so)\n"
            "\t6a0 native_worker_loop+0x40 (/usr/lib/libworker.so)\n"
            "\t7a0 start_thread+0x1f (/usr/lib/x86_64-linux-gnu/libc.so.6)\n"
            "\t8a0 clone3+0x2c (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\n")
    assert fold_text(text) == [
        "app;native_worker_loop;closure_fcn;_CallPythonObject;callback (cb.py) 1"]


# `record --pid --activate` on CPython 3.13 (perf_jit), real sample, paths neutralised:
# `<module>` and `loop` were running before the trampoline turned on, so they share
# one plain `_PyEval_EvalFrameDefault` (3.11+ inline Python-to-Python calls) and
# only `work`, called afterwards, has a trampoline.
ACTIVATED = """\
python3.13 2281/2281 11913.963766:    1001001 cpu-clock:pppH:
\t          12609d x_add (/usr/lib/libpython3.13.so.1.0)
\t           9356d _PyEval_EvalFrameDefault (/usr/lib/libpython3.13.so.1.0)
\t              85 py::work:/srv/demo/loop.py (/tmp/jitted-2281-7.so)
\t          2bc5f0 py_trampoline_evaluator (/usr/lib/libpython3.13.so.1.0)
\t           f01be PyObject_Vectorcall (/usr/lib/libpython3.13.so.1.0)
{between}\t           8e60a _PyEval_EvalFrameDefault (/usr/lib/libpython3.13.so.1.0)
\t          2329e4 PyEval_EvalCode (/usr/lib/libpython3.13.so.1.0)
\t          2949fd run_eval_code_obj (/usr/lib/libpython3.13.so.1.0)
\t          294c8e run_mod (/usr/lib/libpython3.13.so.1.0)
\t          2be6e9 Py_RunMain (/usr/lib/libpython3.13.so.1.0)
\t          2beed6 Py_BytesMain (/usr/lib/libpython3.13.so.1.0)
\t           27249 __libc_start_call_main (/usr/lib/x86_64-linux-gnu/libc.so.6)
{root}
"""
START = "\t            1080 _start (/usr/bin/python3.13)\n"


def test_calls_running_before_activation_are_marked():
    assert fold_text(ACTIVATED.format(between="", root=START)) == [
        "python3.13;[python frames before activation];work (loop.py);x_add 1001001"]
    # frame-pointer stacks end at __libc_start_call_main: complete too
    assert fold_text(ACTIVATED.format(between="", root="")) == [
        "python3.13;[python frames before activation];work (loop.py);x_add 1001001"]


def test_c_code_called_by_the_newest_old_frame_is_kept():
    sorted_call = ("\t          22a217 list_sort (/usr/lib/libpython3.13.so.1.0)\n"
                   "\t          22a217 builtin_sorted (/usr/lib/libpython3.13.so.1.0)\n"
                   "\t           f01be PyObject_Vectorcall (/usr/lib/libpython3.13.so.1.0)\n")
    assert fold_text(ACTIVATED.format(between=sorted_call, root=START)) == [
        "python3.13;[python frames before activation];builtin_sorted;list_sort;work (loop.py);x_add 1001001"]


def test_a_stack_cut_short_is_marked_truncated():
    # the unwinder stopped inside the old frames: where the stack began is unknown
    cut = ACTIVATED.format(between="", root=START).split("\t          2329e4")[0] + "\n"
    assert fold_text(cut) == ["python3.13;[truncated];work (loop.py);x_add 1001001"]


def test_a_thread_running_before_activation_is_marked():
    thread = ACTIVATED.format(between="", root="").replace(
        "\t          2329e4 PyEval_EvalCode", "\t          1a0e0 thread_run").split(
        "\t          2949fd")[0] + (
        "\t           8ab2c start_thread (/usr/lib/x86_64-linux-gnu/libc.so.6)\n"
        "\t          10a80c clone3 (/usr/lib/x86_64-linux-gnu/libc.so.6)\n\n")
    assert fold_text(thread) == ["python3.13;[python frames before activation];work (loop.py);x_add 1001001"]


def test_launched_recordings_have_no_mark():
    for path in (JIT, FP, RECURSION):
        assert not any("before activation" in line for line in fold(path)), path.name


def test_report_counts_no_time_for_the_mark():
    from mixedstack.analyze.report import ReportBuilder

    lines = io.StringIO(ACTIVATED.format(between="", root=START), newline="\n")
    figures = ReportBuilder().add_all(parse(lines)).result()
    names = {row["function"] for rows in figures["functions"].values() if rows for row in rows}
    assert names == {"work (loop.py)"}
    assert figures["health"]["broken_stacks"] == 0


def test_python_code_that_ran_before_the_trampolines_were_on_is_marked():
    """3.8-3.12 with the agent: start-up imports run before its sitecustomize turns the
    trampolines on, as the plain eval loop. In a recording made with trampolines that
    is Python code without names, marked once; the C it called stays."""
    from mixedstack.markers import BEFORE_ACTIVATION
    from mixedstack.analyze.processors.python import PythonMerge
    from mixedstack.model import Frame

    lib, libc = "/opt/python/lib/libpython3.11.so.1.0", "/usr/lib/x86_64-linux-gnu/libc.so.6"
    root_first = [Frame("1", name + "+0x1", dso) for name, dso in [
        ("_start", "/opt/python/bin/python3.11"), ("__libc_start_call_main", libc), ("Py_BytesMain", lib),
        ("pymain_run_python", lib), ("_PyEval_EvalFrameDefault", lib), ("_PyObject_Call", lib),
        ("_PyEval_EvalFrameDefault", lib), ("marshal_loads", lib), ("PyUnicode_New", lib)]]
    assert PythonMerge(trampolined=True)(list(root_first)) == [BEFORE_ACTIVATION, root_first[7], root_first[8]]
    # a recording without trampolines (native mode), or perf script text: as it is
    assert PythonMerge()(list(root_first)) == root_first


def test_python_code_of_the_interpreters_initialisation_is_marked_in_any_mode():
    """3.13+'s own trampolines come on in init_interp_main, after the codecs' imports:
    the eval loop under the initialisation is Python code without names in a recording
    of any mode, its perf script text included; the C it called stays."""
    from mixedstack.markers import BEFORE_ACTIVATION
    from mixedstack.analyze.processors.python import PythonMerge
    from mixedstack.model import Frame

    python, libc = "/usr/bin/python3.14", "/usr/lib/x86_64-linux-gnu/libc.so.6"
    root_first = [Frame("1", name + "+0x1", dso) for name, dso in [
        ("_start", python), ("__libc_start_call_main", libc), ("Py_BytesMain", python), ("pymain_init", python),
        ("Py_InitializeFromConfig", python), ("init_interp_main", python), ("_PyUnicode_InitEncodings", python),
        ("PyImport_ImportModule", python), ("_PyEval_EvalFrameDefault", python), ("builtin_exec", python),
        ("_PyEval_EvalFrameDefault", python), ("_Py_dict_lookup", python)]]
    assert PythonMerge()(list(root_first)) == [BEFORE_ACTIVATION, root_first[11]]
    # the initialisation's own C, without the eval loop, stays as it is
    assert PythonMerge()(root_first[:8]) == root_first[:8]
