"""The door-side subcommands: ``eval``, ``demo`` and ``door``.

Each command is declared here and runs a function in the module that owns the
work, imported only when the command runs (models load lazily).
"""

from bytelocker.cli import lazy

# Not edge.describe.AUGMENTS: that module imports dlib, and the CLI must start fast.
AUGMENTS = ("none", "mirror")


def register(subparsers):
    """Add ``eval``, ``demo`` and ``door`` to ``subparsers``."""
    ev = subparsers.add_parser("eval", help="measure recognition accuracy on labelled photos or a clip")
    evs = ev.add_subparsers(dest="eval_command", metavar="KIND", required=True)

    p = evs.add_parser("pairs", help="LFW View-2 verification protocol (10-fold)")
    p.add_argument("--images", required=True, help="folder of <Name>/<Name>_NNNN.jpg")
    p.add_argument("--pairs", required=True, help="pairs file in LFW pairs.txt format")
    p.add_argument("--config", "-c", help="door.yaml to take the threshold and detector from")
    p.add_argument("--augment", choices=AUGMENTS, help="describe faces this way instead of door.yaml's "
                   "(enrolled and probe photos alike; 'mirror' averages each face with its mirror image)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="save the ROC curve")
    p.add_argument("--jobs", type=int, default=0, help="worker processes (default: all cores)")
    p.set_defaults(func=lazy("edge.evaluate:cmd_pairs"))

    p = evs.add_parser("gallery", help="open-set 1:N door question: strangers vs enrolled people")
    p.add_argument("--images", required=True, help="folder of <Name>/<Name>_NNNN.jpg")
    p.add_argument("--enroll-per-person", type=int, required=True, metavar="K")
    p.add_argument("--unknown-share", type=float, default=0.5, metavar="F",
                   help="share of people never enrolled (default 0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", "-c", help="door.yaml to take the matching settings from")
    p.add_argument("--augment", choices=AUGMENTS, help="describe faces this way instead of door.yaml's "
                   "(enrolled and probe photos alike; 'mirror' averages each face with its mirror image)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--jobs", type=int, default=0, help="worker processes (default: all cores)")
    p.set_defaults(func=lazy("edge.evaluate:cmd_gallery"))

    p = evs.add_parser("video", help="run a recorded clip through the real door loop")
    p.add_argument("--video", required=True)
    p.add_argument("--enroll", required=True, help="folder of <person_id>/* photos to enrol")
    p.add_argument("--config", "-c", help="door.yaml to take the loop settings from")
    p.add_argument("--augment", choices=AUGMENTS, help="describe faces this way instead of door.yaml's "
                   "(enrolled and probe photos alike; 'mirror' averages each face with its mirror image)")
    p.add_argument("--json", action="store_true", help="print a JSON list of decisions")
    p.set_defaults(func=lazy("edge.video_eval:cmd_video"))

    p = subparsers.add_parser("demo", help="run the whole chain on this machine with sample faces")
    p.add_argument("--workdir", help="folder for the demo's databases and logs (default: a temp dir)")
    p.add_argument("--loop-only", action="store_true",
                   help="run only the recognition loop (no broker, central or relay)")
    p.set_defaults(func=lazy("bytelocker.demo:cmd_demo"))

    door = subparsers.add_parser("door", help="run or operate a door unit")
    ds = door.add_subparsers(dest="door_command", metavar="ACTION", required=True)
    p = ds.add_parser("run", help="run the door daemon")
    p.add_argument("--config", "-c", required=True, help="door.yaml")
    p.set_defaults(func=lazy("edge.app:cmd_run"))
    p = ds.add_parser("lock", help="engage the lock now (systemd ExecStopPost); safe after kill -9")
    p.add_argument("--config", "-c", required=True, help="door.yaml")
    p.set_defaults(func=lazy("hardware.commands:cmd_lock"))
    p = ds.add_parser("status", help="show the running door's last decision, fps, camera, broker, outbox")
    p.add_argument("--config", "-c", required=True, help="door.yaml")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lazy("edge.status:cmd_status"))
