"""Child process for the durability test: writes conference documents as fast as it can.

``python -m confd_tests.reliability.store_writer <database url> [numbers]`` prints
``account <id>`` once, then one line per document *after* ``create()`` returned: a printed id is
an acknowledged write, which must survive the process being killed at any moment.  With
``numbers`` each document also claims a conference number, so a write touches two tables.
"""

from __future__ import annotations

import sys

from confd.store import Store


def main(argv: list) -> int:
    store = Store.from_url(argv[1])
    with_numbers = len(argv) > 2 and argv[2] == "numbers"
    account, _key = store.accounts.create_account("durability")
    out = sys.stdout
    out.write("account %s\n" % account["id"])
    out.flush()
    i = 0
    while True:
        i += 1
        doc = {"name": "burst %d" % i}
        if with_numbers:
            doc["conference_numbers"] = [str(100000 + i)]
        created = store.conferences.create(account["id"], doc)
        out.write(created.id + "\n")
        out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
