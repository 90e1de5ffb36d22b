"""Running untrusted, model-written Python in a sandbox.

Threat model. The code is adversarial: it may try to read host files (secrets,
the repository, other episodes), write outside its own directory, reach the
network, exhaust memory, CPU, disk, processes or the output channel, or outlive
its episode. The host (this process, its files, its network peers, other
sandboxes) must stay untouched and the call must return within its wall time
with a report of what happened. Kernel exploits are out of scope: this is
namespace + rlimit isolation, not a VM.

How. Each run is a fresh process tree started by `unshare` in new mount, PID,
network, IPC and UTS namespaces. A small launcher (pid 1 of the new PID
namespace) builds a new root on a size-limited tmpfs holding only a read-only
`/usr` (the system Python), `/proc` of the new PID namespace, four harmless
device nodes, `/tmp` and the working directory `/sandbox`; it pivots into it and
detaches the old root, so no host path (no `/etc`, no repository, no home) is
reachable. It then drops to a random unprivileged uid (no capabilities,
`no_new_privs`), applies rlimits (CPU seconds, address space, file size, open
files, processes) and runs `python3 -I main.py`. The network namespace has
only a downed loopback. The parent reads at most `output_bytes` of each stream,
kills the whole tree on overflow or at the wall timeout (the PID namespace dies
with its pid 1), and reports the exit code, signal, limits hit and timings.

Needs: Linux, root (to create the namespaces and switch uid), `unshare` from
util-linux and `/usr/bin/python3`. Where these are missing `Sandbox` refuses to
run code at all (SandboxUnavailable), never falls back to running it unconfined.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field

SANDBOX_PYTHON = "/usr/bin/python3"
SETUP_FAILED = 125
"""The launcher's exit code when it could not build the sandbox."""
REAP_TIMEOUT_S = 10.0
READ_CHUNK = 65536

# The launcher runs as root inside the new namespaces; it takes its settings as
# JSON in argv[1] and the files to create on stdin (JSON), so nothing of the
# sandbox's content ever touches the host's disk.
_LAUNCHER = r"""
import ctypes, json, os, resource, sys
cfg = json.loads(sys.argv[1])
files = json.loads(sys.stdin.read())
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18

def fail(msg):
    sys.stderr.write("asyncrl-sandbox: setup failed: " + msg + "\n")
    os._exit(125)

def mount(src, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s else None
    if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        fail("mount %s: %s" % (target, os.strerror(ctypes.get_errno())))

def bind_ro(src, target):
    mount(src, target, None, MS_BIND | MS_REC)
    mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)

root, uid = "/tmp", cfg["uid"]
mount(None, "/", None, MS_REC | MS_PRIVATE)
mount("sandbox", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=755" % cfg["disk_mb"])
for d in ("usr", "proc", "dev", "tmp", "sandbox"):
    os.mkdir(root + "/" + d)
for name in ("bin", "lib", "lib64", "sbin"):
    if os.path.islink("/" + name):
        os.symlink(os.readlink("/" + name), root + "/" + name)
bind_ro("/usr", root + "/usr")
for dev in ("null", "zero", "random", "urandom"):
    open(root + "/dev/" + dev, "w").close()
    mount("/dev/" + dev, root + "/dev/" + dev, None, MS_BIND)
mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
os.chmod(root + "/tmp", 0o1777)
os.chown(root + "/sandbox", uid, uid)
os.chmod(root + "/sandbox", 0o700)
for rel, text in files.items():
    path = os.path.join(root, "sandbox", rel)
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, uid, uid)
os.chdir(root)
os.mkdir(".old")
if libc.syscall(155, b".", b".old") != 0:  # pivot_root (x86_64)
    fail("pivot_root: " + os.strerror(ctypes.get_errno()))
os.chdir("/")
if libc.umount2(b"/.old", 2) != 0:  # MNT_DETACH
    fail("umount old root: " + os.strerror(ctypes.get_errno()))
os.rmdir("/.old")

child = os.fork()
if child == 0:
    try:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        limits = [
            (resource.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 1),
            (resource.RLIMIT_AS, cfg["memory_mb"] << 20, cfg["memory_mb"] << 20),
            (resource.RLIMIT_FSIZE, cfg["file_size_mb"] << 20, cfg["file_size_mb"] << 20),
            (resource.RLIMIT_NOFILE, 64, 64),
            (resource.RLIMIT_NPROC, cfg["processes"], cfg["processes"]),
            (resource.RLIMIT_CORE, 0, 0),
        ]
        for which, soft, hard in limits:
            resource.setrlimit(which, (soft, hard))
        os.chdir("/sandbox")
        env = {"PATH": "/usr/bin", "HOME": "/sandbox", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
        os.execve(cfg["python"], [cfg["python"], "-I", "-B", cfg["main"]], env)
    except BaseException as exc:
        sys.stderr.write("asyncrl-sandbox: setup failed: %r\n" % (exc,))
    os._exit(125)
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        os._exit(125)
    if pid == child:
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
"""


class SandboxUnavailable(RuntimeError):
    """This host cannot isolate code; model-written code is never run unconfined."""


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 10.0
    """Wall-clock limit of the whole run (sleeping or blocked code included)."""
    cpu_s: int = 5
    """CPU seconds (SIGXCPU at the limit, SIGKILL one second later)."""
    memory_mb: int = 512
    """Address space of each process."""
    file_size_mb: int = 8
    """Largest file a process may write."""
    disk_mb: int = 32
    """Size of the sandbox's whole filesystem (tmpfs, in memory)."""
    processes: int = 32
    """Processes and threads of the sandbox's uid."""
    output_bytes: int = 16384
    """Bytes kept of stdout and of stderr each; more kills the run."""


@dataclass
class SandboxResult:
    exit_code: int | None
    """The program's exit code; 128+N when a signal N ended it; None when killed by us."""
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    output_truncated: bool = False
    limits_hit: list[str] = field(default_factory=list)
    """Which limits ended or hampered the run: wall_time, cpu_time, output, memory, ..."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.output_truncated

    def to_dict(self) -> dict:
        return asdict(self)


def check_available() -> None:
    """Raise SandboxUnavailable with one line saying what is missing."""
    if os.name != "posix" or not os.path.exists("/proc/self/ns/mnt"):
        raise SandboxUnavailable("the code sandbox needs Linux namespaces")
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            "the code sandbox needs root to create namespaces and switch uid "
            "(run the env pools as root, e.g. in a container)"
        )
    if shutil.which("unshare") is None:
        raise SandboxUnavailable("the code sandbox needs `unshare` (apt install util-linux)")
    if not os.access(SANDBOX_PYTHON, os.X_OK):
        raise SandboxUnavailable(f"the code sandbox needs {SANDBOX_PYTHON} (apt install python3)")


async def run_python(
    code: str,
    limits: SandboxLimits | None = None,
    files: dict[str, str] | None = None,
) -> SandboxResult:
    """Run `code` as `main.py` in a fresh sandbox; `files` are extra files
    (name -> text) placed beside it. Never raises for anything the code does."""
    check_available()
    limits = limits or SandboxLimits()
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *_command(limits),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    overflow = asyncio.Event()
    readers = [
        asyncio.ensure_future(_read_capped(stream, limits.output_bytes, overflow))
        for stream in (proc.stdout, proc.stderr)
    ]
    await _send(proc, {"main.py": code, **(files or {})})
    timed_out = await _wait_or_kill(proc, overflow, limits.wall_s)
    stdout, stderr = await _reap(proc, readers)
    exit_code = None if (timed_out or overflow.is_set()) else proc.returncode
    result = SandboxResult(
        exit_code=exit_code,
        stdout=stdout,
        stderr=stderr,
        seconds=time.perf_counter() - started,
        timed_out=timed_out,
        output_truncated=overflow.is_set(),
    )
    result.limits_hit = _limits_hit(result)
    if exit_code == SETUP_FAILED and "asyncrl-sandbox: setup failed" in stderr:
        raise SandboxUnavailable(stderr.strip().splitlines()[-1])
    return result


async def _send(proc: asyncio.subprocess.Process, payload: dict[str, str]) -> None:
    """The files, as JSON on the launcher's stdin."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(payload).encode())
        await proc.stdin.drain()
        proc.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the launcher failed early; its stderr says why


async def _wait_or_kill(
    proc: asyncio.subprocess.Process, overflow: asyncio.Event, wall_s: float
) -> bool:
    """Wait for the run to end, its output to overflow or the wall-clock limit;
    kill it unless it ended. True when it was killed for time."""
    finished = asyncio.ensure_future(proc.wait())
    watch = asyncio.ensure_future(overflow.wait())
    done, _ = await asyncio.wait(
        {finished, watch}, timeout=wall_s, return_when=asyncio.FIRST_COMPLETED
    )
    timed_out = False
    if finished not in done:
        timed_out = watch not in done
        _kill_tree(proc.pid)
    watch.cancel()
    return timed_out


async def _reap(proc: asyncio.subprocess.Process, readers: list[asyncio.Future]) -> tuple[str, str]:
    """The run's stdout and stderr once it has exited (killed or not): EOF follows
    at once; a bound all the same."""
    try:
        await asyncio.wait_for(asyncio.gather(proc.wait(), *readers), REAP_TIMEOUT_S)
    except TimeoutError:
        _kill_tree(proc.pid)
        for reader in readers:
            reader.cancel()
        raise SandboxUnavailable(
            f"a sandboxed run's pipes stayed open {REAP_TIMEOUT_S:.0f}s after it was killed"
        ) from None
    stdout, stderr = [reader.result() for reader in readers]
    return stdout, stderr


def run_python_sync(
    code: str, limits: SandboxLimits | None = None, files: dict[str, str] | None = None
) -> SandboxResult:
    """`run_python` for callers without an event loop (reward functions)."""
    return asyncio.run(run_python(code, limits, files))


def format_result(result: SandboxResult) -> str:
    """What the model sees: its output plus one line per limit that was hit."""
    parts = []
    if result.stdout:
        parts.append(result.stdout.rstrip("\n"))
    if result.stderr:
        parts.append(result.stderr.rstrip("\n"))
    notes = {
        "wall_time": "killed: wall-clock limit reached",
        "cpu_time": "killed: CPU time limit reached",
        "output": "killed: output limit reached (output truncated)",
        "memory": "memory limit reached",
        "file_size": "file size limit reached",
    }
    parts.extend(f"[{notes[name]}]" for name in result.limits_hit if name in notes)
    if result.exit_code not in (0, None) and not result.limits_hit:
        parts.append(f"[exit code {result.exit_code}]")
    return "\n".join(parts) if parts else "(no output)"


def _command(limits: SandboxLimits) -> list[str]:
    settings = {
        "uid": random.randrange(1_000_000, 2_000_000),  # its own uid: its own process count
        "python": SANDBOX_PYTHON,
        "main": "main.py",
        "cpu_s": int(limits.cpu_s),
        "memory_mb": int(limits.memory_mb),
        "file_size_mb": int(limits.file_size_mb),
        "disk_mb": int(limits.disk_mb),
        "processes": int(limits.processes),
    }
    namespaces = ["--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child"]
    launcher = [SANDBOX_PYTHON, "-I", "-S", "-c", _LAUNCHER, json.dumps(settings)]
    return ["unshare", *namespaces, *launcher]


async def _read_capped(stream: asyncio.StreamReader, cap: int, overflow: asyncio.Event) -> str:
    """Keep the first `cap` bytes; past them set `overflow` (the run gets killed)
    and drain the rest to EOF: a reader that stopped would leave the pipe paused
    and asyncio's `proc.wait()` waiting for it to close."""
    kept = bytearray()
    while chunk := await stream.read(READ_CHUNK):
        room = cap - len(kept)
        kept += chunk[: max(room, 0)]
        if len(chunk) > room:
            overflow.set()
    return kept.decode("utf-8", errors="replace")


def _kill_tree(pid: int) -> None:
    """SIGKILL the session; `unshare --kill-child` takes the PID namespace with it."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _limits_hit(result: SandboxResult) -> list[str]:
    hit = []
    if result.timed_out:
        hit.append("wall_time")
    if result.output_truncated:
        hit.append("output")
    if result.exit_code in (128 + signal.SIGXCPU, 128 + signal.SIGKILL):
        hit.append("cpu_time")
    if result.exit_code == 128 + signal.SIGXFSZ or "File too large" in result.stderr:
        hit.append("file_size")
    if "MemoryError" in result.stderr or "Cannot allocate memory" in result.stderr:
        hit.append("memory")
    if "Resource temporarily unavailable" in result.stderr:
        hit.append("processes")
    return hit
