#!/usr/bin/env python3
"""Keeps the kernel's BPF run-time statistics on while it runs (bench/run.sh).

BPF_ENABLE_STATS hands out a file descriptor; the kernel counts run_time_ns and
run_cnt of every BPF program for as long as any such descriptor is open, and stops
by itself when it closes (also if this process is killed): unlike writing the
kernel.bpf_stats_enabled sysctl, nothing is left changed on the host.
"""
import ctypes
import platform
import signal
import sys

BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
SYS_BPF = {"x86_64": 321, "aarch64": 280}


def main():
    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        print(f"bpf_stats: unsupported machine {platform.machine()}", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.c_uint32(BPF_STATS_RUN_TIME)  # union bpf_attr, enable_stats: { __u32 type; }
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    fd = libc.syscall(nr, BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        print(f"bpf_stats: BPF_ENABLE_STATS: errno {ctypes.get_errno()}", file=sys.stderr)
        return 2
    print("bpf_stats: on", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


if __name__ == "__main__":
    sys.exit(main())
