"""``contrasyn data``: list, inspect and download datasets."""

from __future__ import annotations

import argparse

from contrasyn.cli.options import add_root, add_verb

DOWNLOADABLE = ["cifar10", "cifar100", "fashion-mnist"]


def cmd_data(args: argparse.Namespace) -> int:
    from contrasyn.data import download, list_datasets, load_dataset

    if args.action == "list":
        print("\n".join(list_datasets()))
    elif args.action == "info":
        kwargs = {"root": args.root} if args.root else {}
        print(load_dataset(args.name, **kwargs).summary())
    elif args.action == "download":
        path = download(args.name, args.root)
        print(f"{args.name}: files are in {path}")
    return 0


def add_commands(sub) -> None:
    data = add_verb(
        sub,
        "data",
        help="list, inspect or download datasets",
        description=[
            "The datasets the benchmark knows: `list` names them, `info` gives a dataset's "
            "split sizes and class names, `download` fetches the ones that can be fetched "
            "(checksums checked). `contrasyn data ACTION --help` explains each action.",
        ],
        examples=[
            "contrasyn data list",
            "contrasyn data info fashion-mnist",
            "contrasyn data download cifar10 --root ~/datasets/cifar10",
        ],
    )
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_verb(
        actions,
        "list",
        help="names of the built-in datasets",
        description=["Print the name of every built-in dataset, one a line."],
        examples=["contrasyn data list"],
    )
    info = add_verb(
        actions,
        "info",
        help="split sizes and class names of a dataset",
        description=[
            "Load a dataset and print its train and test sizes per class and its class names."
        ],
        examples=[
            "contrasyn data info digits",
            "contrasyn data info fashion-mnist --root /data/fashion-mnist",
        ],
    )
    info.add_argument("name", metavar="NAME", help="a name from `contrasyn data list`")
    add_root(info)
    dl = add_verb(
        actions,
        "download",
        help=f"fetch {', '.join(DOWNLOADABLE)} (needs network access; checks checksums)",
        description=[
            f"Download one of {', '.join(DOWNLOADABLE)} and check its files' checksums. The "
            "other datasets are generated or come with a package.",
        ],
        examples=[
            "contrasyn data download fashion-mnist",
            "contrasyn data download cifar10 --root ~/datasets/cifar10",
        ],
    )
    dl.add_argument("name", metavar="NAME", choices=DOWNLOADABLE, help=", ".join(DOWNLOADABLE))
    add_root(dl, "destination folder (default: the cache folder)")
    data.set_defaults(func=cmd_data)
