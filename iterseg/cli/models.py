"""``iterseg models``: list the embedded models."""


def add_parser(subparsers):
    return subparsers.add_parser("models", help="list the embedded models")


def run(args):
    from ..model.store import available_models

    for name in available_models():
        print(name)
    return 0
