"""``bytelocker check-config`` and ``bytelocker config example``."""

import sys
from importlib import resources

from bytelocker.errors import ConfigError

EXAMPLES = {"door": "door.example.yaml", "central": "central.example.yaml"}

NO_BACKEND = ("hardware.backend is not set, but a door must name its GPIO backend: gpiozero (Raspberry Pi), "
              "jetson (Jetson.GPIO) or simulated (no real relay: tests and demos)")


def register(subparsers):
    """Add ``check-config`` and ``config`` to ``subparsers``."""
    p = subparsers.add_parser(
        "check-config",
        help="validate door/central YAML files; print every problem; exit 0 or 1",
        description="Check config files and print every problem found, each naming the file, "
        "line and key. Exits 0 if all files are fine, 1 otherwise. The kind of each file "
        "(door or central) is told from its sections unless --kind is given.",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--kind", choices=sorted(EXAMPLES), help="treat every FILE as this kind")
    p.add_argument("--skip-secrets", action="store_true",
                   help="do not check that the secrets the files need are available "
                        "(for checking a file on a machine other than the one it is for)")
    p.set_defaults(func=check_config)

    p = subparsers.add_parser("config", help="print example config files")
    cs = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    e = cs.add_parser("example", help="print a commented example door.yaml or central.yaml")
    e.add_argument("kind", choices=sorted(EXAMPLES))
    e.set_defaults(func=print_example)


def example_text(kind):
    """The shipped, commented example file for ``kind`` (``door`` or ``central``)."""
    return resources.files("config").joinpath(EXAMPLES[kind]).read_text(encoding="utf-8")


def print_example(args):
    """``bytelocker config example door|central``."""
    sys.stdout.write(example_text(args.kind))
    return 0


def check_config(args):
    """``bytelocker check-config FILE...``: 0 if every file is valid, 1 otherwise."""
    from config.loader import detect_kind, inspect_file, model_for

    failed = False
    for path in args.files:
        kind = args.kind or detect_kind(path)
        if kind is None:
            kind = "central" if "central" in path.rsplit("/", 1)[-1] else "door"
        try:
            model = model_for(kind)
        except ConfigError as exc:  # pragma: no cover - argparse limits the choices
            print(f"{path}: {exc}", file=sys.stderr)
            failed = True
            continue
        result = inspect_file(path, model, check_secrets=not args.skip_secrets)
        if not result.problems and kind == "door" and result.config.hardware.backend is None:
            # Reading a door.yaml (door status, eval) needs no backend; running a door does,
            # and check-config runs before the service starts.
            result.problems.append(f"{path}: {NO_BACKEND}")
        if result.problems:
            failed = True
            count = len(result.problems)
            print(f"{path}: {count} problem{'s' if count > 1 else ''} ({kind} config)", file=sys.stderr)
            for problem in result.problems:
                print(f"  {problem}", file=sys.stderr)
            continue
        upgraded = ""
        if result.notes or (result.version_written is not None
                            and result.version_written != result.config.version):
            upgraded = (f" (written for config version {result.version_written}, read as version "
                        f"{result.config.version}: {'; '.join(result.notes) or 'nothing to change'})")
        print(f"{path}: ok ({kind} config){upgraded}")
    return 1 if failed else 0
