/*
 * _mixedstack_agent: Python frames for perf on CPython 3.8-3.13 built without
 * frame pointers, in the manner of CPython 3.13's -X perf_jit.
 *
 * activate() installs a PEP 523 frame-evaluation hook. The hook runs every code
 * object through a trampoline of its own (16 bytes of x86-64, one per code object,
 * cached in a code-extra slot):
 *
 *     push %rbp; mov %rsp,%rbp; call *%rcx; pop %rbp; ret; <8-byte marker>
 *
 * %rcx holds _PyEval_EvalFrameDefault and the hook's own arguments pass through
 * untouched, so each Python frame leaves a return address inside its trampoline.
 * Each trampoline is described to perf in /tmp/jit-PID.dump (jitdump: DWARF unwind
 * info + a code-load record named py::QUALNAME:FILE:LINE, read by
 * `perf inject --jit`) and in /tmp/perf-PID.map (for frame-pointer unwinding).
 * With MIXEDSTACK_AGENT_PIDS=FILE set, each process that writes those files
 * appends its pid to FILE.
 *
 * Layout: each trampoline slot is 96 bytes, 16 of code and 80 of room, because the
 * DSO that perf inject synthesizes for a trampoline spans its code plus its unwind
 * data (ALIGN_8(16) + 80 bytes): spans of neighbouring trampolines must not overlap.
 * The marker makes the code bytes, hence each synthesized DSO's build-id, unique:
 * perf merges DSOs that share a build-id and would give them one name.
 *
 * Everything here runs with the GIL held (the hook, activate), so the state needs
 * no lock. Arenas are never freed: frames may still be running in them.
 */
#include "patchlevel.h"
#if PY_VERSION_HEX < 0x03090000 || PY_VERSION_HEX >= 0x030B0000
/* 3.8: PyInterpreterState.eval_frame; 3.11+: _PyInterpreterFrame.f_code */
#  define Py_BUILD_CORE_MODULE 1
#endif
#define PY_SSIZE_T_CLEAN
#include "Python.h"
#include "frameobject.h"
#if PY_VERSION_HEX < 0x03090000
#  include "internal/pycore_pystate.h"
#elif PY_VERSION_HEX >= 0x030B0000
#  include "internal/pycore_frame.h"
#endif

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if !defined(__x86_64__)
#  error "the mixedstack agent generates x86-64 trampolines only"
#endif

/* ---- version glue: the hook's signature and how to reach the code object ---- */

#if PY_VERSION_HEX >= 0x030B0000
typedef struct _PyInterpreterFrame FRAME;
#else
typedef PyFrameObject FRAME;
#endif

#if PY_VERSION_HEX >= 0x030D0000
#  define FRAME_CODE(f) ((f)->f_executable)
#else
#  define FRAME_CODE(f) ((PyObject *)(f)->f_code)
#endif

#if PY_VERSION_HEX >= 0x03090000
#  define HOOK_PARAMS PyThreadState *tstate, FRAME *frame, int throwflag
#  define DEFAULT_EVAL(f, t) _PyEval_EvalFrameDefault(tstate, f, t)
/* The trampoline receives the evaluator as a 4th argument (%rcx) and leaves
 * %rdi/%rsi/%rdx, the evaluator's own arguments, as they are. */
typedef PyObject *(*trampoline_fn)(PyThreadState *, FRAME *, int, void *);
#  define CALL_TRAMPOLINE(t, f, x) \
      ((trampoline_fn)(t))(tstate, f, x, (void *)&_PyEval_EvalFrameDefault)
#else
#  define HOOK_PARAMS FRAME *frame, int throwflag
#  define DEFAULT_EVAL(f, t) _PyEval_EvalFrameDefault(f, t)
typedef PyObject *(*trampoline_fn)(FRAME *, int, void *, void *);
#  define CALL_TRAMPOLINE(t, f, x) \
      ((trampoline_fn)(t))(f, x, NULL, (void *)&_PyEval_EvalFrameDefault)
#endif

typedef PyObject *(*eval_fn)(HOOK_PARAMS);

static eval_fn
get_eval_frame(PyInterpreterState *interp)
{
#if PY_VERSION_HEX >= 0x03090000
    return (eval_fn)_PyInterpreterState_GetEvalFrameFunc(interp);
#else
    return (eval_fn)interp->eval_frame;
#endif
}

static void
set_eval_frame(PyInterpreterState *interp, eval_fn fn)
{
#if PY_VERSION_HEX >= 0x03090000
    _PyInterpreterState_SetEvalFrameFunc(interp, (_PyFrameEvalFunction)fn);
#else
    interp->eval_frame = (_PyFrameEvalFunction)fn;
#endif
}

/* ---- trampoline code and its DWARF unwind data ---- */

#define CODE_SIZE 16   /* 8 bytes of code + 8-byte marker (never executed) */
#define SLOT_SIZE 96   /* ALIGN_8(CODE_SIZE) + mapped_size (80): see the header */
#define ARENA_SIZE (64 * 1024)

static const unsigned char trampoline_code[8] = {
    0x55,             /* 0: push %rbp                                      */
    0x48, 0x89, 0xe5, /* 1: mov  %rsp,%rbp   (frame-pointer unwinders)     */
    0xff, 0xd1,       /* 4: call *%rcx       (return address = this frame) */
    0x5d,             /* 6: pop  %rbp                                      */
    0xc3,             /* 7: ret                                            */
};

/* .eh_frame (CIE + FDE, 56 bytes) then .eh_frame_hdr (20 bytes), laid out as
 * perf inject's genelf places them: .eh_frame at ALIGN_8(text + CODE_SIZE), the
 * header right after it. All pointers are relative, so the bytes are constant.
 * Unwind rule: CFA = rsp+8 at entry, rsp+16 from after the push up to and
 * including the pop, rsp+8 at the ret. The CFA never moves to rbp: samples taken
 * in the callee's epilogue (after its pop %rbp) must still unwind. */
#define EH_FRAME_SIZE 56
#define EH_HDR_SIZE 20
#define UNWIND_SIZE (EH_FRAME_SIZE + EH_HDR_SIZE)        /* 76 */
#define UNWIND_MAPPED ((UNWIND_SIZE + 15) & ~15)         /* 80 */

static const unsigned char unwind_data[UNWIND_SIZE] = {
    /* CIE @0 */
    20, 0, 0, 0,            /* length */
    0, 0, 0, 0,             /* CIE id */
    1,                      /* version */
    'z', 'R', 0,            /* augmentation */
    1,                      /* code alignment */
    0x78,                   /* data alignment: -8 */
    16,                     /* return address register: rip */
    1,                      /* augmentation data length */
    0x1b,                   /* FDE pointers: pcrel | sdata4 */
    0x0c, 7, 8,             /* DW_CFA_def_cfa rsp+8 */
    0x90, 1,                /* DW_CFA_offset rip, cfa-8 */
    0, 0,                   /* DW_CFA_nop padding */
    /* FDE @24 */
    28, 0, 0, 0,            /* length */
    28, 0, 0, 0,            /* CIE pointer: back to offset 0 */
    0xd0, 0xff, 0xff, 0xff, /* pc_begin: -48 = code start - &pc_begin (@32, code 16 before) */
    CODE_SIZE, 0, 0, 0,     /* pc_range */
    0,                      /* augmentation data length */
    0x41,                   /* DW_CFA_advance_loc 1 (after push) */
    0x0e, 16,               /* DW_CFA_def_cfa_offset 16 */
    0x86, 2,                /* DW_CFA_offset rbp, cfa-16 */
    0x46,                   /* DW_CFA_advance_loc 6 (after pop, at ret) */
    0x0e, 8,                /* DW_CFA_def_cfa_offset 8 */
    0xc6,                   /* DW_CFA_restore rbp */
    0, 0, 0, 0, 0, 0,       /* DW_CFA_nop padding */
    /* .eh_frame_hdr @56 */
    1,                      /* version */
    0x1b,                   /* eh_frame_ptr: pcrel | sdata4 */
    0x03,                   /* fde_count: udata4 */
    0x3b,                   /* table: datarel | sdata4 */
    0xc4, 0xff, 0xff, 0xff, /* eh_frame_ptr: -60 (from @60 to @0) */
    1, 0, 0, 0,             /* fde_count */
    0xb8, 0xff, 0xff, 0xff, /* initial location: -72 = code start - hdr */
    0xe0, 0xff, 0xff, 0xff, /* FDE address: -32 = @24 - hdr */
};

/* ---- jitdump records (tools/perf/Documentation/jitdump-specification.txt) ---- */

#define JITDUMP_MAGIC 0x4A695444
#define JIT_CODE_LOAD 0
#define JIT_CODE_UNWINDING_INFO 4

typedef struct {
    uint32_t magic, version, total_size, elf_mach, pad1, pid;
    uint64_t timestamp, flags;
} jit_header;

typedef struct {
    uint32_t id, total_size;
    uint64_t timestamp;
} jit_record;

typedef struct {
    jit_record p;
    uint32_t pid, tid;
    uint64_t vma, code_addr, code_size, code_index;
} jit_code_load;

typedef struct {
    jit_record p;
    uint64_t unwinding_size, eh_frame_hdr_size, mapped_size;
} jit_unwinding;

#define UNWIND_RECORD_SIZE ((sizeof(jit_unwinding) + UNWIND_SIZE + 7) & ~(size_t)7)

/* ---- state (guarded by the GIL) ---- */

static struct {
    int active;                 /* our hook is installed */
    Py_ssize_t extra_index;     /* code-extra slot holding each code's trampoline */
    PyInterpreterState *interp; /* the interpreter we hooked */
    pid_t pid;                  /* whose files are open; 0 = open them on next use */
    int dump_fd, map_fd;
    void *dump_page;            /* the jitdump's first page, mapped PROT_EXEC */
    char *arena;                /* current arena, and the next free slot in it */
    size_t arena_used;
    uint64_t salt;              /* per process: markers unique across processes */
    uint64_t arenas, trampolines, code_index;
    int debug;
    const char *failed;         /* why trampolines stopped, if they did */
} st = {0, -1, NULL, 0, -1, -1, NULL, NULL, ARENA_SIZE, 0, 0, 0, 0, 0, NULL};

/* Set once a code object could not get a trampoline: it runs without one. */
#define NO_TRAMPOLINE ((void *)1)

static uint64_t
monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  /* perf record -k 1 */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Unbuffered: a process killed by a signal loses nothing already described. */
static int
write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void
close_files(void)
{
    if (st.dump_fd >= 0)
        close(st.dump_fd);
    if (st.map_fd >= 0)
        close(st.map_fd);
    st.dump_fd = st.map_fd = -1;
}

/* A file of ours, made now: /tmp is everyone's, so never through a link another
 * user placed there, and never someone else's file. A stale file of our own from
 * an earlier process with this pid is replaced. Owner-only: perf reads as root. */
static int
open_new(const char *path, int flags)
{
    struct stat info;
    int fd = open(path, flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0 || errno != EEXIST)
        return fd;
    if (lstat(path, &info) != 0 || !S_ISREG(info.st_mode) || info.st_uid != geteuid())
        return -1;
    if (unlink(path) != 0)
        return -1;
    return open(path, flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
}

/* /tmp/jit-PID.dump (header + first page mapped executable, which is how perf
 * record notices it and perf inject --jit finds it) and /tmp/perf-PID.map. */
static const char *
open_files(void)
{
    char path[64];
    pid_t pid = getpid();
    jit_header h;

    close_files();
    snprintf(path, sizeof path, "/tmp/jit-%d.dump", (int)pid);
    st.dump_fd = open_new(path, O_RDWR);
    if (st.dump_fd < 0)
        return "cannot create /tmp/jit-PID.dump";
    memset(&h, 0, sizeof h);
    h.magic = JITDUMP_MAGIC;
    h.version = 1;
    h.total_size = sizeof h;
    h.elf_mach = 62;  /* EM_X86_64 */
    h.pid = (uint32_t)pid;
    h.timestamp = monotonic_ns();
    if (write_all(st.dump_fd, &h, sizeof h) < 0)
        return "cannot write /tmp/jit-PID.dump";
    st.dump_page = mmap(NULL, (size_t)sysconf(_SC_PAGESIZE), PROT_READ | PROT_EXEC,
                        MAP_PRIVATE, st.dump_fd, 0);
    if (st.dump_page == MAP_FAILED) {
        st.dump_page = NULL;
        return "cannot map /tmp/jit-PID.dump executable (noexec /tmp?)";
    }
    snprintf(path, sizeof path, "/tmp/perf-%d.map", (int)pid);
    st.map_fd = open_new(path, O_WRONLY | O_APPEND);
    if (st.map_fd < 0)
        return "cannot create /tmp/perf-PID.map";
    st.pid = pid;
    st.salt = ((uint64_t)pid << 32) ^ monotonic_ns();
    /* MIXEDSTACK_AGENT_PIDS=FILE: one line per process that wrote /tmp files, so
     * whoever started the run (record, tests) can find forked children's files. */
    const char *log = getenv("MIXEDSTACK_AGENT_PIDS");
    if (log != NULL && log[0] != '\0') {
        int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) {
            char line[24];
            int n = snprintf(line, sizeof line, "%d\n", (int)pid);
            (void)write_all(fd, line, (size_t)n);  /* O_APPEND: one atomic line */
            close(fd);
        }
    }
    if (st.debug)
        fprintf(stderr, "mixedstack agent: pid %d writes /tmp/jit-%d.dump\n", (int)pid, (int)pid);
    return NULL;
}

/* In a forked child: the inherited descriptors are the parent's files. Drop them;
 * the child opens its own on its first new trampoline. Trampolines made before
 * the fork stay valid (inherited memory, described by the parent's jitdump, which
 * perf applies to the child through fork inheritance). The current arena's free
 * slots are abandoned: the parent may hand out the same addresses. */
static void
after_fork_child(void)
{
    close_files();
    st.pid = 0;
    st.arena = NULL;
    st.arena_used = ARENA_SIZE;
}

static char *
new_slot(void)
{
    if (st.arena_used + SLOT_SIZE > ARENA_SIZE) {
        /* Fill a whole arena RW, then make it RX: never writable and executable. */
        char *a = mmap(NULL, ARENA_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (a == MAP_FAILED) {
            st.failed = "cannot map a trampoline arena";
            return NULL;
        }
        st.arenas++;
        for (size_t off = 0; off + SLOT_SIZE <= ARENA_SIZE; off += SLOT_SIZE) {
            uint64_t marker = st.salt ^ (st.arenas << 40) ^ off;
            memcpy(a + off, trampoline_code, sizeof trampoline_code);
            memcpy(a + off + 8, &marker, 8);
            memset(a + off + CODE_SIZE, 0xcc, SLOT_SIZE - CODE_SIZE);  /* int3 */
        }
        if (mprotect(a, ARENA_SIZE, PROT_READ | PROT_EXEC) != 0) {
            munmap(a, ARENA_SIZE);
            st.failed = "cannot make a trampoline arena executable";
            return NULL;
        }
        st.arena = a;
        st.arena_used = 0;
    }
    char *slot = st.arena + st.arena_used;
    st.arena_used += SLOT_SIZE;
    return slot;
}

static const char *
utf8_or(PyObject *s, const char *fallback)
{
    const char *u = (s != NULL && PyUnicode_Check(s)) ? PyUnicode_AsUTF8(s) : NULL;
    if (u == NULL) {
        PyErr_Clear();  /* e.g. a file name with lone surrogates */
        return fallback;
    }
    return u;
}

/* Records for one trampoline: unwind info, code load (one write), map line. */
static void
describe(char *slot, PyCodeObject *co)
{
#if PY_VERSION_HEX >= 0x030B0000
    const char *qualname = utf8_or(co->co_qualname, "?");
#else
    const char *qualname = utf8_or(co->co_name, "?");
#endif
    const char *filename = utf8_or(co->co_filename, "?");
    int n = snprintf(NULL, 0, "py::%s:%s:%d", qualname, filename, co->co_firstlineno);
    size_t load_size = sizeof(jit_code_load) + (size_t)n + 1 + CODE_SIZE;
    size_t total = UNWIND_RECORD_SIZE + load_size;
    char *buf = calloc(1, total);
    if (buf == NULL)
        return;
    uint64_t now = monotonic_ns();

    jit_unwinding *u = (jit_unwinding *)buf;
    u->p.id = JIT_CODE_UNWINDING_INFO;
    u->p.total_size = UNWIND_RECORD_SIZE;
    u->p.timestamp = now;
    u->unwinding_size = UNWIND_SIZE;
    u->eh_frame_hdr_size = EH_HDR_SIZE;
    u->mapped_size = UNWIND_MAPPED;
    memcpy(buf + sizeof *u, unwind_data, UNWIND_SIZE);

    jit_code_load *l = (jit_code_load *)(buf + UNWIND_RECORD_SIZE);
    l->p.id = JIT_CODE_LOAD;
    l->p.total_size = (uint32_t)load_size;
    l->p.timestamp = now;
    l->pid = (uint32_t)st.pid;
    l->tid = (uint32_t)syscall(SYS_gettid);
    l->vma = l->code_addr = (uint64_t)(uintptr_t)slot;
    l->code_size = CODE_SIZE;
    l->code_index = st.code_index++;
    char *name = (char *)(l + 1);
    snprintf(name, (size_t)n + 1, "py::%s:%s:%d", qualname, filename, co->co_firstlineno);
    for (char *c = name; *c; c++)  /* one line per entry in the perf map */
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    memcpy(name + n + 1, slot, CODE_SIZE);
    if (write_all(st.dump_fd, buf, total) < 0)
        st.failed = "cannot write /tmp/jit-PID.dump";

    /* perf map line: "ADDR SIZE NAME" */
    char *line = malloc((size_t)n + 40);
    if (line != NULL) {
        int m = snprintf(line, (size_t)n + 40, "%lx %x %s\n",
                         (unsigned long)(uintptr_t)slot, CODE_SIZE, name);
        if (m > 0 && write_all(st.map_fd, line, (size_t)m) < 0)
            st.failed = "cannot write /tmp/perf-PID.map";
        free(line);
    }
    free(buf);
    st.trampolines++;
}

static void *
new_trampoline(PyCodeObject *co)
{
    void *tramp = NO_TRAMPOLINE;
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
#else
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);  /* e.g. gen.throw(): the exception being thrown in */
#endif
    if (st.failed == NULL && st.pid != getpid()) {
        const char *why = open_files();  /* first trampoline of a forked child */
        if (why != NULL)
            st.failed = why;
    }
    if (st.failed == NULL) {
        char *slot = new_slot();
        if (slot != NULL) {
            describe(slot, co);
            tramp = slot;
        }
    }
    if (_PyCode_SetExtra((PyObject *)co, st.extra_index, tramp) < 0)
        PyErr_Clear();
    if (st.failed != NULL && st.debug) {
        fprintf(stderr, "mixedstack agent: no more trampolines: %s\n", st.failed);
        st.debug = 0;
    }
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(et, ev, tb);
#endif
    return tramp;
}

/* The hook: the default evaluator with identical arguments, called through the
 * code object's trampoline. Recursion checks, exceptions, generators and tracing
 * all stay the default evaluator's business. */
static PyObject *
mixedstack_eval(HOOK_PARAMS)
{
    PyObject *co = FRAME_CODE(frame);
    void *tramp = NULL;
    if (co == NULL || !PyCode_Check(co))
        return DEFAULT_EVAL(frame, throwflag);
    if (_PyCode_GetExtra(co, st.extra_index, &tramp) < 0) {
        PyErr_Clear();  /* cannot happen for a code object and our index */
        tramp = NO_TRAMPOLINE;
    }
    if (tramp == NULL)
        tramp = new_trampoline((PyCodeObject *)co);
    if (tramp == NO_TRAMPOLINE)
        return DEFAULT_EVAL(frame, throwflag);
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
    /* 3.12 charges each C-level evaluator entry 2 of its 1500 C-recursion units
     * (PY_EVAL_C_STACK_UNITS), budgeted for C recursion, since Python-to-Python
     * calls are otherwise inlined. With any hook every Python call is such an
     * entry, so RecursionError would come at depth ~750 instead of the recursion
     * limit (CPython's own -X perf does that). Give one unit back per level:
     * the default limit behaves as without us, and ~1500 hooked levels (~0.8 MB
     * of C stack) stay the ceiling. */
    tstate->c_recursion_remaining++;
    PyObject *result = CALL_TRAMPOLINE(tramp, frame, throwflag);
    tstate->c_recursion_remaining--;
    return result;
#else
    return CALL_TRAMPOLINE(tramp, frame, throwflag);
#endif
}

/* ---- module ---- */

static PyObject *
agent_activate(PyObject *self, PyObject *unused)
{
    PyInterpreterState *interp = PyThreadState_Get()->interp;
    eval_fn current = get_eval_frame(interp);
    const char *debug = getenv("MIXEDSTACK_AGENT_DEBUG");
    st.debug = debug != NULL && debug[0] != '\0' && strcmp(debug, "0") != 0;
    if (current == mixedstack_eval)
        Py_RETURN_TRUE;
    if (current != (eval_fn)_PyEval_EvalFrameDefault)
        return PyUnicode_FromString(
            "another PEP 523 frame evaluator is installed (a debugger, or CPython's own "
            "perf trampoline); the mixedstack agent stays out of its way");
    if (st.interp != NULL && st.interp != interp)
        return PyUnicode_FromString("the agent serves one interpreter per process");
    if (st.extra_index < 0) {
        st.extra_index = _PyEval_RequestCodeExtraIndex(NULL);
        if (st.extra_index < 0) {
            PyErr_Clear();
            return PyUnicode_FromString("no free code-extra index");
        }
    }
    if (st.pid != getpid()) {
        const char *why = open_files();
        if (why != NULL) {
            close_files();
            return PyUnicode_FromFormat("%s: %s", why, strerror(errno));
        }
    }
    if (st.interp == NULL)
        pthread_atfork(NULL, NULL, after_fork_child);
    st.interp = interp;
    set_eval_frame(interp, mixedstack_eval);
    st.active = 1;
    Py_RETURN_TRUE;
}

static PyObject *
agent_deactivate(PyObject *self, PyObject *unused)
{
    /* Trampolines stay mapped: frames may still be running in them. */
    if (st.active && get_eval_frame(st.interp) == mixedstack_eval)
        set_eval_frame(st.interp, (eval_fn)_PyEval_EvalFrameDefault);
    st.active = 0;
    Py_RETURN_NONE;
}

static PyObject *
agent_stats(PyObject *self, PyObject *unused)
{
    return Py_BuildValue(
        "{s:O,s:i,s:K,s:K,s:z}",
        "active", (st.active && get_eval_frame(PyThreadState_Get()->interp) == mixedstack_eval)
                      ? Py_True : Py_False,
        "pid", (int)st.pid, "trampolines", (unsigned long long)st.trampolines,
        "arenas", (unsigned long long)st.arenas, "failed", st.failed);
}

static PyMethodDef methods[] = {
    {"activate", agent_activate, METH_NOARGS,
     "Install the trampoline hook. True when active, else a str saying why not."},
    {"deactivate", agent_deactivate, METH_NOARGS,
     "Restore the default evaluator (trampolines stay valid)."},
    {"stats", agent_stats, METH_NOARGS, "Counters for tests and diagnostics."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mixedstack_agent",
    "Per-code-object trampolines + jitdump so perf shows Python frames.", -1, methods,
};

PyMODINIT_FUNC
PyInit__mixedstack_agent(void)
{
    return PyModule_Create(&module);
}
