"""Reports invalid entries of ``categories.yaml`` in the Airflow UI.

This file defines no DAG. When an entry is invalid it raises, so that Airflow shows a DAG
import error naming the entry and the field, while ``category_dags.py`` keeps generating
the valid categories' DAGs.
"""

from __future__ import annotations

from pathlib import Path

from category_pipeline.config import categories_file, load_categories


class InvalidCategoryEntries(ValueError):
    pass


# However many entries are invalid, the message stays a few KB: the first ones are listed.
MAX_LISTED_CHARS = 8000


def _listed(errors) -> str:
    lines: list[str] = []
    used = 0
    for shown, error in enumerate(errors):
        line = f"  - {error}"
        if used + len(line) > MAX_LISTED_CHARS:
            lines.append(f"  - … and {len(errors) - shown} more")
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


_config = load_categories(categories_file(Path(__file__).parent))
if _config.errors:
    raise InvalidCategoryEntries(
        f"{len(_config.errors)} invalid entr{'y' if len(_config.errors) == 1 else 'ies'} in categories.yaml "
        "(their DAGs are not generated; the other categories are unaffected):\n" + _listed(_config.errors)
    )
