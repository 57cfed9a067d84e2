"""The bias-precision sweep (the study's grid) as a script; same as `tvm-quant sweep`.

    python scripts/imagenet_sweep.py --model resnet101_v2 --params ~/models/resnet101_v2.params \
        --data ~/data/imagenet/val.rec --num-images 3000 --calib-images 100 \
        --nbit-bias 8 9 16 32 --calibrators power2 max --out docs/bias_sweep_resnet101_v2

See tvm_quant_ext/sweep.py for models, data formats and outputs.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tvm_quant_ext import sweep  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return sweep.run_from_args(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"imagenet_sweep: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
