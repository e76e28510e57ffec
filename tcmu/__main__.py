"""python -m tcmu serve --handler SPEC --device NAME [--log FILE] [--recover]

Exit status: 0 after a stop (SIGTERM/SIGINT) or when the device is removed; 2 with a
one-sentence error for bad input (spec, device, configfs, ring); 1 for anything
unexpected (add -v to see the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tcmu", description="TCMU handler runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve one TCMU device with one handler")
    serve.add_argument(
        "--handler", required=True, metavar="SPEC",
        help="'package.module:Class key=value ...' or 'path/to/file.py:Class ...'",
    )
    serve.add_argument(
        "--device", required=True, metavar="NAME",
        help="UIO name 'tcm-user/<hba>/<dev_name>/<config>', the dev_name, or uioN",
    )
    serve.add_argument("--log", metavar="FILE", help="append one JSON line per command")
    serve.add_argument(
        "--recover", action="store_true",
        help="attach to a device whose previous handler died (block, reset ring, resume)",
    )
    serve.add_argument("--no-netlink", action="store_true", help="do not listen on netlink")
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # exits 2 with a usage line on bad arguments
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="tcmu: %(levelname)s: %(message)s",
    )
    from tcmu.device import DeviceError
    from tcmu.ring import RingError
    from tcmu.runner import serve
    from tcmu.spec import HandlerSpecError
    from tcmu.uio import UioNotFound

    try:
        return serve(
            args.handler, args.device, log_path=args.log, recover=args.recover,
            netlink=not args.no_netlink,
        )
    except (HandlerSpecError, UioNotFound, DeviceError, RingError) as e:
        print(f"tcmu: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"tcmu: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except Exception as e:
        if args.verbose:
            logging.exception("unexpected failure")
        print(f"tcmu: unexpected {type(e).__name__}: {e} (run with -v for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
