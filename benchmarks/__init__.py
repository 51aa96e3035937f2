"""Benchmarks: each prints its exact command, the machine and its figures (docs/benchmarks.md)."""

import os
import platform

# CPU flags that decide the speed of float32, bfloat16 and float16 maths.
_RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def cpu_description():
  """"<CPU model>, <cores> cores, flags: ..." from /proc/cpuinfo (Linux), or the platform's name elsewhere."""
  from launch.runtime import cpu_info  # pylint: disable=g-import-not-at-top
  model, flags = cpu_info()
  present = [flag for flag in _RELEVANT_FLAGS if flag in flags]
  return (f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores, flags: "
          f"{' '.join(present) or 'none of ' + ' '.join(_RELEVANT_FLAGS)}")
