"""`record --pid`: what a running process allows, and turning its trampoline on.

What runs there: the interpreter behind /proc/PID/exe (or, for a program that
embeds Python, the libpython in its maps), and whether a trampoline is already on:
its jitdump is mapped (CPython's -X perf_jit, or our agent), or its perf map was
written since it started (-X perf).

Turning it on (`--activate`): gdb attaches for a moment and queues one pending
call, `Py_AddPendingCall(PyRun_SimpleString, CODE)`, then detaches. CPython runs
CODE in its main thread at its next check between bytecodes, with the GIL held: a
point where running Python code is safe, not wherever gdb happened to stop the
process. CODE turns the trampoline on and writes its outcome to a status file that
record waits for:

    perf-map  (3.12+ with frame pointers)  sys.activate_stack_trampoline("perf")
    perf-jit  (3.13 without them)          what -X perf_jit does at start-up:
              _PyPerfTrampoline_SetCallbacks(&_Py_perfmap_jit_callbacks) and
              _PyPerfTrampoline_Init(1), called through ctypes at addresses read from
              libpython's symbol table. sys.activate_stack_trampoline cannot do it:
              in 3.12 and 3.13 it accepts "perf" only (its "perf_jit" branch sits
              inside the "perf" one and is never reached).
    agent     (3.8-3.12 without them; a    imports mixedstack's agent, built for that
              3.13 without a symbol table)  interpreter, and activates it

On 3.14+ the route is CPython's own, `sys.remote_exec(PID, SCRIPT)` (PEP 768), run by
the target's own interpreter: the target runs SCRIPT at the same kind of safe point,
and `sys.activate_stack_trampoline("perf_jit")` works there. No gdb; but the target
may have turned remote debugging off (PYTHON_DISABLE_REMOTE_DEBUG, -X
disable_remote_debug, a build --without-remote-debug), which record then says.

The same route flushes CPython 3.13+'s jitdump when the recording stops: CPython
writes it through a 2 MiB stdio buffer, so entries still in the buffer would leave
their Python frames `[unknown]` after `perf inject --jit`.

Calls already running at activation go on without a trampoline; the Python merge
marks them (analyze/processors/python.py, BEFORE_ACTIVATION). The trampoline stays on after
the recording (CPython's own deactivation has had use-after-free bugs, gh-112367).

    process.py     what runs in the process, and whether a trampoline is on in it
    inject.py      running code there: gdb's pending call, or sys.remote_exec
    activation.py  the code that turns each kind of trampoline on
    pid.py         `record --pid`: the mode, activating if asked (attach())
"""
