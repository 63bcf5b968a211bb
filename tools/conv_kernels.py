"""Every oneDNN kernel for ResNet-50's inference convolutions, timed alone, nChw8c and NHWC.

    python tools/conv_kernels.py --batch_size 16 --repeats 7

Builds tools/conv_kernels.cc against the oneDNN the CPU extension links (the `[train]`
extra's wheel; Linux x86_64 and a C++ compiler) in a temporary folder and runs it: per
geometry, the median ms of each kernel oneDNN offers in each layout, then the network's total
for oneDNN's first choice and for the fastest kernel of each layout. What a layout or kernel
choice could gain, measured before building it into the inference graph (BENCHMARKS.md).
`--onednn PREFIX` builds it against another oneDNN 3 install instead, e.g. one built from
source (the cmake line used for 3.14 heads
benchmarks/cpu_2026-12-08/conv_kernels_onednn3.14_vs_3.2.txt), to compare versions.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile

from resnet_jax.cpu import extension

SOURCE = pathlib.Path(__file__).with_name("conv_kernels.cc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--geometries", type=int, default=100,
                        help="time the first N of ResNet-50's 23 distinct geometries")
    parser.add_argument("--onednn", type=pathlib.Path, default=None, metavar="PREFIX",
                        help="another oneDNN 3 install (PREFIX/include, PREFIX/lib), e.g. one "
                             "built from source, instead of the [train] extra's wheel")
    args = parser.parse_args()
    if args.onednn and not extension.holds_onednn(args.onednn):
        sys.exit(f"error: --onednn {args.onednn}: no oneDNN 3 there "
                 f"(include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so.3)")
    with tempfile.TemporaryDirectory() as tmp:
        binary = pathlib.Path(tmp) / "conv_kernels"
        build = subprocess.run(extension.onednn_command(SOURCE, binary, "-O2", "-std=c++17",
                                                        prefix=args.onednn),
                               capture_output=True, text=True)
        if build.returncode != 0:
            sys.exit(f"error: building {SOURCE.name} failed:\n{build.stderr[-2000:]}")
        run = subprocess.run([str(binary), str(args.batch_size), str(args.repeats),
                              str(args.geometries)])
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
