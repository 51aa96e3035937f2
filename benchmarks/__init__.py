"""Benchmarks: each prints its exact command, the machine and its figures (docs/benchmarks.md)."""

import os
import platform

# CPU flags that decide the speed of float32, bfloat16 and float16 maths.
_RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def cpu_description():
  """"<CPU model>, <cores> cores, flags: ..." from /proc/cpuinfo (Linux), or the platform's name elsewhere."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
        if model and flags:
          break
  except OSError:
    pass
  present = [flag for flag in _RELEVANT_FLAGS if flag in flags]
  return f"{model}, {os.cpu_count()} cores, flags: {' '.join(present) or 'none of ' + ' '.join(_RELEVANT_FLAGS)}"
