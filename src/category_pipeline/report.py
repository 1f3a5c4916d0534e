"""Read a day back from the warehouse: the table ``make run`` prints."""

from __future__ import annotations

from datetime import date

from category_pipeline.warehouse import Warehouse

COLUMNS = ("category", "products", "orders", "units", "revenue", "quarantined", "order_rows")

# Per category: the product metrics (category DAGs), the order rows they were computed
# from (category DAGs) and the quarantine count (advanced_data_pipeline's summary).
# PostgreSQL rounds only NUMERIC to a number of places (not double precision): hence the cast.
DAILY_REPORT = """
SELECT m.category, m.products, m.orders, m.units, m.revenue, s.quarantined, o.order_rows
FROM (SELECT category, COUNT(*) AS products, SUM(orders) AS orders, SUM(units) AS units,
             ROUND(CAST(SUM(revenue) AS NUMERIC), 2) AS revenue
      FROM category_daily_metrics WHERE order_date = {p} GROUP BY category) AS m
LEFT JOIN (SELECT category, COUNT(*) AS order_rows FROM orders WHERE order_date = {p} GROUP BY category) AS o
       ON o.category = m.category
LEFT JOIN (SELECT category, quarantined FROM daily_sales_summary WHERE order_date = {p}) AS s
       ON s.category = m.category
ORDER BY m.category
"""


def daily_report(warehouse: Warehouse, day: date) -> list[dict]:
    placeholder = "%s" if warehouse.dialect == "postgres" else "?"
    param = day if warehouse.dialect == "postgres" else day.isoformat()
    connection = warehouse.connect()
    try:
        rows = connection.execute(DAILY_REPORT.format(p=placeholder), [param, param, param]).fetchall()
    finally:
        connection.close()
    # NUMERIC comes back as Decimal from PostgreSQL: the same float as from SQLite.
    return [{c: float(v) if c == "revenue" and v is not None else v for c, v in zip(COLUMNS, row)} for row in rows]


def format_table(rows: list[dict]) -> str:
    cells = [list(COLUMNS)] + [["-" if row[c] is None else _fmt(row[c]) for c in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)
