"""Words for messages: lists joined in English, plurals, node counts."""


def _join(items):
    items = list(items)
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _others(group, me):
    others = [s for s in group if s != me]
    return others[0] if len(others) == 1 else "all of " + _join(others)


def _plural(items, word):
    return word if len(items) == 1 else word + "s"


def _nodes_word(count):
    return "node" if count == 1 else "nodes"


def _at_least(count):
    return "a node" if count == 1 else f"at least {count} nodes"


def _at_most(count):
    return f"{count} {_nodes_word(count)}"
