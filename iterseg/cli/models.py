"""``iterseg models``: the embedded models as a table (iterseg/cards.py): task, input, image size
trained on, training data and licence, test Dice, cost at the default setting, file size."""


def add_parser(subparsers):
    parser = subparsers.add_parser("models", help="list the embedded models: task, data, licence, Dice, cost")
    parser.add_argument("--json", action="store_true", help="print the model cards as JSON")
    return parser


def run(args):
    import json

    from ..cards import card_table, model_card
    from ..model.store import WEIGHTS_DIR, available_models, load_bundle

    cards = [model_card(load_bundle(name), WEIGHTS_DIR / f"{name}.pt") for name in available_models()]
    print(json.dumps(cards, indent=2) if getattr(args, "json", False) else card_table(cards))
    return 0
