"""Print the pins of a constraints file for packages a base environment does not have.

    python pins_not_in_base.py BASE_FREEZE CONSTRAINTS

Used by images/Dockerfile: a package the base image already has keeps the base's version
(its freeze is a constraint of its own), so our pin of it would only conflict.
"""

import re
import sys


def name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[=<>!~;\[ ]", requirement.strip(), maxsplit=1)[0]).lower()


def main(base_freeze: str, constraints: str) -> None:
    with open(base_freeze) as handle:
        present = {name(line) for line in handle if "==" in line}
    with open(constraints) as handle:
        for line in handle:
            pin = line.split("#", 1)[0].strip()
            if pin and name(pin) not in present:
                print(pin)


if __name__ == "__main__":
    main(*sys.argv[1:])
