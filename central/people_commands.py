"""``bytelocker enroll``, ``people``, ``revoke``, ``forget`` and ``keys init``.

These change central's registry and its signed change log; the running
central service (``bytelocker central run``) publishes each change to the
doors within a fraction of a second, or as soon as it starts.  Times are UTC.
"""

import argparse
import datetime as dt
import os
import sys

DEFAULT_CONFIG = "/etc/bytelocker/central.yaml"


def parse_when(text, *, end_of_day=False):
    """An ISO date or date-time as naive UTC; a bare date means its start (or, with
    ``end_of_day``, its last second)."""
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            when = dt.datetime.combine(day, dt.time(23, 59, 59) if end_of_day else dt.time())
        else:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-25 or 2026-11-25T08:00") from None
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when


def _until(text):
    return parse_when(text, end_of_day=True)


def register(subparsers):
    """Add the people and key commands to ``subparsers``."""
    def config_arg(p):
        p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"central.yaml (default {DEFAULT_CONFIG})")

    p = subparsers.add_parser(
        "enroll", help="check photos of a person and enrol (or add photos to) them",
        description="Check each photo (one face, big, bright and sharp enough), report the verdict per "
                    "photo, and enrol the good ones. Enrolling an existing id adds photos.")
    p.add_argument("--id", dest="person_id", required=True, help="the person's id (opaque, e.g. a staff number)")
    p.add_argument("--name", help="the person's name (default: the id)")
    p.add_argument("--group", dest="groups", action="append", metavar="G",
                   help="a group the person belongs to; repeat for several (replaces the stored groups)")
    p.add_argument("--door", dest="doors", action="append", metavar="DOOR_ID",
                   help="only this door; repeat for several (default: every door)")
    p.add_argument("--all-doors", action="store_true", help="open every door again after --door limited them")
    p.add_argument("--valid-from", type=parse_when, metavar="DATE", help="no access before (UTC date or time)")
    p.add_argument("--valid-until", type=_until, metavar="DATE",
                   help="no access after (UTC; a bare date means to the end of that day)")
    p.add_argument("--reinstate", action="store_true", help="give a revoked person access again")
    p.add_argument("photos", nargs="+", metavar="PHOTO_OR_DIR", help="photos, or folders of photos")
    config_arg(p)
    p.set_defaults(func=cmd_enroll)

    p = subparsers.add_parser("people", help="list enrolled people: photos, groups, validity, status")
    config_arg(p)
    p.set_defaults(func=cmd_people)

    p = subparsers.add_parser("revoke", help="remove a person's access at every door now (history is kept)")
    p.add_argument("person_id", metavar="ID")
    config_arg(p)
    p.set_defaults(func=cmd_revoke)

    p = subparsers.add_parser(
        "forget", help="erase a person everywhere: descriptors, identity (also on doors), events, snapshots")
    p.add_argument("person_id", metavar="ID")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    config_arg(p)
    p.set_defaults(func=cmd_forget)

    keys = subparsers.add_parser("keys", help="central's signing key for enrolment updates")
    ks = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ks.add_parser("init", help="create the Ed25519 signing key (0600) and print the public key for door.yaml")
    p.add_argument("--key", metavar="PATH",
                   help="where to write it (default: $BYTELOCKER_SIGNING_KEY, the systemd credential "
                        "'signing-key', or /etc/bytelocker/credentials/signing-key)")
    p.set_defaults(func=cmd_keys_init)
    p = ks.add_parser("show", help="print the public key of the existing signing key")
    p.add_argument("--key", metavar="PATH", help="the private key file (default as for init)")
    p.set_defaults(func=cmd_keys_show)


def open_registry(config_path):
    """Load central.yaml and open its database; return the config."""
    from central.db import open_database
    from config import secrets
    from config.loader import load_central_config

    import central.clusters  # noqa: F401  (stranger sightings, which forget erases too)
    import central.registry  # noqa: F401  (registers its tables before they are created)
    try:
        import central.store  # noqa: F401  (events, so forget can anonymise them)
    except ImportError:  # pragma: no cover
        pass

    config = load_central_config(config_path)
    password = secrets.read_secret(secrets.DATABASE_PASSWORD.name, secrets.DATABASE_PASSWORD.env_var)
    open_database(config.database.url, password)
    return config


def cmd_enroll(args):
    from tqdm import tqdm

    from central.enrolment import PhotoChecker, enrol_photos, photo_paths
    from edge.describe import FaceDescriber

    config = open_registry(args.config)
    check_doors_listed(args.doors, config)
    paths = photo_paths(args.photos)
    checker = PhotoChecker(config.enrolment, FaceDescriber())
    folder_given = any(os.path.isdir(p) for p in args.photos)
    progress = (lambda items: tqdm(items, desc=f"checking photos of {args.person_id}", unit="photo",
                                   file=sys.stderr, leave=False)) if folder_given else None
    result = enrol_photos(
        args.person_id, paths, checker, name=args.name, groups=args.groups,
        doors=None if args.all_doors else args.doors, valid_from=args.valid_from, valid_until=args.valid_until,
        reinstate=args.reinstate, replace_doors=args.all_doors, progress=progress)
    for check in result.checks:
        print(check.describe())
    print(f"{args.person_id}: {result.added} photo(s) enrolled, {len(result.rejected)} rejected; "
          f"change version {result.version} goes to the doors as soon as central is running.")


def check_doors_listed(doors, config):
    """Refuse ``--door`` ids that central.yaml's ``doors:`` does not list (when it lists any).

    A mistyped door would limit the person to a door that does not exist,
    locking them out of every real one without a word.
    """
    from difflib import get_close_matches

    from bytelocker.errors import EnrolmentError

    if not config.doors:
        return
    for door in doors or ():
        if door not in config.doors:
            close = get_close_matches(door, list(config.doors), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise EnrolmentError(f"--door {door!r} is not one of the doors in central.yaml "
                                 f"({', '.join(sorted(config.doors))}).{hint}")


def _when(value):
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


def cmd_people(args):
    from central import registry
    from central.commands import print_rows

    open_registry(args.config)
    rows = [{
        "id": p.person_id, "name": p.name, "photos": n, "groups": ",".join(p.groups),
        "doors": "all" if p.doors is None else ",".join(p.doors),
        "valid_from": _when(p.valid_from), "valid_until": _when(p.valid_until),
        "status": p.status if p.active else f"revoked {_when(p.revoked_at)}",
    } for p, n in registry.list_people()]
    print_rows(rows, ["id", "name", "photos", "groups", "doors", "valid_from", "valid_until", "status"])
    print(f"enrolment version {registry.current_version()}")


def cmd_revoke(args):
    from central import registry

    open_registry(args.config)
    version = registry.revoke(args.person_id)
    print(f"{args.person_id}: revoked at every door (change version {version}); their history is kept.")


def cmd_forget(args):
    from bytelocker.errors import EnrolmentError
    from central.enrolment import forget_everywhere

    from central import registry

    config = open_registry(args.config)
    if (registry.Person.get_or_none(registry.Person.person_id == args.person_id) is None
            and not registry.forgotten_among([args.person_id])):
        # A typo must not look like a successful erasure while the real person stays enrolled.
        raise EnrolmentError(f"No person with id {args.person_id!r} is enrolled, and none was forgotten "
                             "under it: nothing erased. 'bytelocker people' lists the ids.")
    if not args.yes:
        if not sys.stdin.isatty():
            raise EnrolmentError(f"Forgetting {args.person_id!r} cannot be undone; add --yes to confirm.")
        try:
            answer = input(f"Erase {args.person_id!r} everywhere, for good? Type the id to confirm: ")
        except (EOFError, KeyboardInterrupt):
            answer = None
        if answer is None or answer.strip() != args.person_id:
            print("\nNothing erased." if answer is None else "Nothing erased.")
            return 1
    erased = forget_everywhere(args.person_id, config.storage.snapshot_dir,
                               threshold=config.alerts.stranger_threshold)
    if erased.version is None:
        where = "was no longer enrolled (forgotten before?); central's records were scrubbed again"
    else:
        where = f"erased from the registry (doors erase them with change version {erased.version})"
    print(f"{args.person_id}: {where}; {erased.events} event(s) anonymised, {erased.snapshots} snapshot(s) "
          f"and {erased.sightings} stranger sighting(s) deleted.")


def cmd_keys_init(args):
    from bytelocker import signing

    path = signing.signing_key_path(args.key)
    public = signing.init_signing_key(path)
    print(f"Created the signing key {path} (mode 0600). Keep it secret and backed up.")
    print("Pin this public key on every door, in door.yaml:")
    print(f"  door:\n    central_public_key: {public}")


def cmd_keys_show(args):
    from bytelocker import signing

    print(signing.public_key_b64(signing.load_signing_key(args.key)))
