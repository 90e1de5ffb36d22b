"""Sandbox escape suite: model code attacks the host; each attack is contained
and reported, and the host is checked afterwards (files, listener, processes)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from core.sandbox import SandboxLimits, format_result, run_python, run_python_sync

REPO = Path(__file__).resolve().parents[2]
FAST = SandboxLimits(wall_s=4.0, cpu_s=2, output_bytes=4096)


def run(code: str, limits: SandboxLimits = FAST):
    return run_python_sync(code, limits)


def test_runs_ordinary_code_and_returns_its_output():
    result = run("import math\nprint(math.factorial(10))")
    assert result.ok and result.stdout.strip() == "3628800" and result.limits_hit == []


def test_cannot_read_host_secrets_or_the_repository():
    result = run(
        "import os\n"
        f"for p in ['/etc/passwd', '/etc/shadow', '/root', {str(REPO)!r}, "
        f"{str(REPO / 'README.md')!r}]:\n"
        "    print(p, os.path.exists(p))\n"
    )
    assert result.ok
    assert all(line.endswith("False") for line in result.stdout.splitlines()), result.stdout
    assert set(os.listdir("/")) >= {"etc", "root"}  # they exist on the host


def test_cannot_write_outside_its_directory(tmp_path):
    victim = tmp_path / "pwned"
    result = run(
        "import os\nok = []\n"
        f"for p in [{str(victim)!r}, '/usr/pwned', {str(REPO / 'pwned')!r}, '/tmp/../pwned']:\n"
        "    try:\n        open(p, 'w').write('x'); ok.append(p)\n"
        "    except OSError as e: print(type(e).__name__, p)\n"
        "open('mine.txt', 'w').write('fine'); print('own dir ok', open('mine.txt').read())\n"
        "print('written', ok)\n"
    )
    assert "own dir ok fine" in result.stdout
    assert "'/usr/pwned'" not in result.stdout.split("written")[-1]
    assert not victim.exists() and not (REPO / "pwned").exists()
    assert not Path("/usr/pwned").exists() and not Path("/pwned").exists()


def test_runs_as_an_unprivileged_user_without_capabilities():
    result = run(
        "import os\nprint(os.getuid(), os.getgid())\n"
        "print([l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1])\n"
    )
    uid, gid = map(int, result.stdout.splitlines()[0].split())
    assert uid >= 1_000_000 and gid == uid
    assert int(result.stdout.splitlines()[1], 16) == 0


def test_cannot_reach_the_network_or_a_host_listener():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    result = run(
        "import socket\n"
        f"for host in [('127.0.0.1', {port}), ('1.1.1.1', 53)]:\n"
        "    try:\n        socket.create_connection(host, timeout=1); print('CONNECTED', host)\n"
        "    except OSError as e: print('blocked', host, e.errno)\n"
    )
    assert "CONNECTED" not in result.stdout and result.stdout.count("blocked") == 2
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing ever arrived on the host side
    listener.close()


def test_fork_bomb_is_contained_and_leaves_no_process_behind():
    before = _host_pids()
    started = time.monotonic()
    result = run("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass\n")
    assert time.monotonic() - started < FAST.wall_s + 3
    assert result.timed_out or result.exit_code != 0
    time.sleep(0.5)
    assert len(_host_pids() - before) <= 2  # nothing of the bomb survives


def test_huge_allocation_fails_inside_the_sandbox():
    result = run("x = bytearray(10 * 2**30)\nprint('allocated')")
    assert "allocated" not in result.stdout and "memory" in result.limits_hit
    assert "memory limit" in format_result(result)


def test_infinite_loop_hits_the_cpu_limit():
    started = time.monotonic()
    result = run("while True:\n    pass")
    assert "cpu_time" in result.limits_hit and time.monotonic() - started < FAST.wall_s


def test_sleeping_forever_hits_the_wall_clock_limit():
    result = run("import time\ntime.sleep(3600)", SandboxLimits(wall_s=1.0))
    assert result.timed_out and result.exit_code is None and result.seconds < 3


def test_printing_a_gigabyte_is_cut_off():
    result = run("import sys\nfor _ in range(2**14):\n    sys.stdout.write('x' * 2**16)\n")
    assert result.output_truncated and len(result.stdout) == FAST.output_bytes
    assert "output limit" in format_result(result)


def test_filling_the_disk_is_bounded():
    result = run("f = open('big', 'wb')\nfor _ in range(64):\n    f.write(b'x' * 2**20)\n")
    assert "file_size" in result.limits_hit


def test_concurrent_runs_are_isolated_from_each_other():
    async def both():
        writer = run_python("open('/tmp/shared', 'w').write('secret')\nimport time; time.sleep(1)")
        reader = run_python(
            "import time, os\ntime.sleep(0.5)\nprint(os.path.exists('/tmp/shared'))"
        )
        return await asyncio.gather(writer, reader)

    _, reader = asyncio.run(both())
    assert reader.stdout.strip() == "False"


def _host_pids() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}
