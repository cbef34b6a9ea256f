"""eval/physics.py's tests on the built-in particle frames: their real-vs-real numbers, what 1.1x brighter
frames score, and how long each part takes.

    python benchmarks/physics_speed.py [--real 300] [--generated 1000] [--resolution 32] [--threads 1]

The real set is builtin:particles (seed 0, --real frames) and the floor's second set is rendered afresh
(--generated frames, as in eval/physics.py). Three "generated" sets: an independent rendered set (seed 7:
what an ideal generator scores), the same set with every intensity scaled by 1.1, and a copier (the
real frames themselves). Timed: the cheap
tests (features, separation powers, FPD and KPD of the floor and of one generated set) and the
classifier tests (the floor's and one generated set's; 5 folds of the CNN and the trees each).
Prints one JSON object (with the thread count and the load average, for reading the times).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from eval.physics import PhysicsTests, independent_real_frames
from training.data import load_images


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=int, default=300)
    parser.add_argument("--generated", type=int, default=1000)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    path = f"builtin:particles?count={args.real}"
    real = load_images(path, args.resolution, 1)
    second = independent_real_frames(path, args.resolution, args.generated)
    ideal = load_images(f"builtin:particles?count={args.generated}&seed=7", args.resolution, 1)
    brighter = ideal.float() * 1.1
    load_before = os.getloadavg()[0]

    started = time.perf_counter()
    tests = PhysicsTests(real, second)
    ideal_report = tests.report(ideal)
    cheap_s = time.perf_counter() - started
    brighter_report = tests.report(brighter)

    started = time.perf_counter()
    ideal_report["classifier"] = tests.classifier_report(ideal)  # the floor's test runs in this first call
    classifier_s = time.perf_counter() - started
    brighter_report["classifier"] = tests.classifier_report(brighter)
    copier_report = tests.report(real)
    copier_report["classifier"] = tests.classifier_report(real)

    print(json.dumps({"real": args.real, "generated": args.generated, "resolution": args.resolution,
                      "threads": args.threads, "load_average": [load_before, os.getloadavg()[0]],
                      "cheap_tests_s": round(cheap_s, 2), "classifier_tests_s": round(classifier_s, 2),
                      "ideal": ideal_report, "brighter_1.1": brighter_report,
                      "copier": copier_report}))


if __name__ == "__main__":
    main()
