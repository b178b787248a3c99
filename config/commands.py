"""``bytelocker check-config`` and ``bytelocker config``."""

import sys

from bytelocker.errors import ConfigError


def register(subparsers):
    p = subparsers.add_parser("check-config", help="validate door/central YAML files; exit 0 or 1")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=check_config)


def check_config(args):
    from config.loader import load_central_config, load_door_config

    failed = False
    for path in args.files:
        loader = load_central_config if "central" in path else load_door_config
        try:
            loader(path)
        except ConfigError as exc:
            failed = True
            for problem in exc.problems:
                print(problem, file=sys.stderr)
        else:
            print(f"{path}: ok")
    return 1 if failed else 0
