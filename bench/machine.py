"""The machine a benchmark ran on, printed with every result: speed ratios differ from CPU to CPU."""
import os
import platform

VECTOR_EXTENSIONS = ("amx_tile", "avx512_fp16", "avx512_bf16", "avx512_vnni", "avx512f", "avx2", "avx", "sse4_2",
                     "neon", "asimd", "sve")


def describe_machine():
    """e.g. 'CPU: AMD EPYC 7B13 (avx512f avx2), 2 cores'."""
    names, flags = [], set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    names.append(value.strip())
                elif key.strip() in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        pass
    name = names[0] if names else platform.processor() or platform.machine()
    extensions = [extension for extension in VECTOR_EXTENSIONS if extension in flags]
    return f"CPU: {name} ({' '.join(extensions) or 'no vector extensions listed'}), {os.cpu_count()} cores"


def stolen_cpu_seconds():
    """CPU time taken from this virtual machine by its host since boot (/proc/stat's steal), 0 where unknown: a
    benchmark that lost much of it ran on a busy host and is noisier than usual."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0
