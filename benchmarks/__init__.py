"""``make bench*``: throughput and latency against the static baseline of the same run.

The benchmarks start many processes on the development issuer; its warning is given once
by the command that starts them, not once per process (issue 29).
"""

import os
import sys

if os.environ.get("TELEIMG_DEV_NOTICE_GIVEN") != "1":
    print("benchmarks: DEVELOPMENT MODE (development issuer, local data dirs)", file=sys.stderr)
    os.environ["TELEIMG_DEV_NOTICE_GIVEN"] = "1"
