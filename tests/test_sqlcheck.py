"""SQL validation for text2sql items: one read-only query that compiles against the schema."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from sdstudio.errors import ConfigError
from sdstudio.sqlcheck import check_sql

SCHEMA = """\
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, country TEXT, created_at DATE);
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT, price REAL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), ordered_at DATE, status TEXT);
CREATE TABLE order_items (order_id INTEGER REFERENCES orders(id), product_id INTEGER REFERENCES products(id), quantity INTEGER, unit_price REAL);
"""


@pytest.mark.parametrize("sql", [
    ("SELECT c.name, COUNT(o.id) AS orders FROM customers c LEFT JOIN orders o ON o.customer_id = c.id "
     "GROUP BY c.id, c.name;"),
    ("SELECT p.category, SUM(oi.quantity * oi.unit_price) AS revenue FROM order_items oi "
     "JOIN products p ON p.id = oi.product_id GROUP BY p.category HAVING revenue > 1000 ORDER BY revenue DESC"),
    ("WITH totals AS (SELECT order_id, SUM(quantity * unit_price) AS total FROM order_items GROUP BY order_id) "
     "SELECT o.id, t.total FROM orders o JOIN totals t ON t.order_id = o.id ORDER BY t.total DESC LIMIT 5"),
    ("SELECT name FROM customers "
     "WHERE id IN (SELECT customer_id FROM orders WHERE ordered_at >= date('now', '-30 days'))"),
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 12) SELECT x FROM n",
    "-- customers per country\nselect country, count(*) from customers group by country;  ",
])
def test_valid_read_only_queries_pass(sql):
    assert check_sql(sql, SCHEMA) is None


def test_sql_in_a_markdown_code_fence_is_checked_without_the_fence():
    fenced = "Here is the query:\n```sql\nSELECT name FROM products WHERE price > 10;\n```\nIt lists products."
    assert check_sql(fenced, SCHEMA) is None


def test_fenced_sql_is_still_checked():
    assert check_sql("```sql\nSELECT total FROM orders\n```", SCHEMA) == \
        "SQL references a missing column: no such column: total"


def test_missing_table_is_named():
    assert check_sql("SELECT * FROM invoices", SCHEMA) == "SQL references a missing table: no such table: invoices"


def test_missing_column_is_named():
    assert check_sql("SELECT o.total FROM orders o", SCHEMA) == \
        "SQL references a missing column: no such column: o.total"


def test_syntax_error_is_reported():
    assert check_sql("SELEC * FROM orders", SCHEMA) == 'SQL syntax error: near "SELEC": syntax error'


def test_incomplete_query_is_a_syntax_error():
    assert check_sql("SELECT * FROM orders WHERE", SCHEMA) == "SQL syntax error: incomplete input"


def test_other_compile_errors_are_reported_as_invalid():
    assert check_sql("SELECT id FROM orders JOIN customers ON customers.id = orders.customer_id", SCHEMA) == \
        "SQL is invalid: ambiguous column name: id"


@pytest.mark.parametrize(("sql", "verb"), [
    ("DELETE FROM orders", "DELETE"),
    ("DROP TABLE orders", "DROP"),
    ("INSERT INTO products (name) VALUES ('x')", "INSERT"),
    ("UPDATE products SET price = 0", "UPDATE"),
    ("ATTACH DATABASE 'other.db' AS other", "ATTACH"),
    ("PRAGMA table_info(orders)", "PRAGMA"),
    ("CREATE TABLE invoices (id INTEGER)", "CREATE"),
    ("/* sneaky */ delete from orders", "DELETE"),
    ("WITH old AS (SELECT id FROM orders) DELETE FROM orders WHERE id IN (SELECT id FROM old)", "DELETE"),
])
def test_statements_that_are_not_read_only_queries_are_rejected(sql, verb):
    assert check_sql(sql, SCHEMA) == f"SQL is not a read-only query ({verb})"


def test_more_than_one_statement_is_rejected():
    assert check_sql("SELECT id FROM orders; SELECT id FROM customers", SCHEMA) == "SQL has more than one statement"


def test_a_write_hidden_after_a_query_is_rejected():
    assert check_sql("SELECT 1; DROP TABLE orders;", SCHEMA) == "SQL has more than one statement"


def test_one_trailing_semicolon_is_allowed_but_not_two():
    assert check_sql("SELECT id FROM orders;", SCHEMA) is None
    assert check_sql("SELECT id FROM orders;;", SCHEMA) == "SQL has more than one statement"


def test_sqlite_internal_tables_are_not_part_of_the_schema():
    assert check_sql("SELECT name FROM sqlite_master", SCHEMA) == \
        "SQL uses SQLite's internal tables (sqlite_master); query only the schema's tables"


def test_parameter_placeholders_are_rejected():
    assert check_sql("SELECT * FROM orders WHERE id = ?", SCHEMA).startswith("SQL has parameter placeholders")


@pytest.mark.parametrize("sql", ["", "   \n", "```sql\n```"])
def test_empty_sql_is_rejected(sql):
    assert check_sql(sql, SCHEMA) == "SQL is empty"


def test_attach_creates_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_sql("ATTACH DATABASE 'evil.db' AS evil", SCHEMA)
    check_sql("SELECT 1; ATTACH DATABASE 'evil2.db' AS evil", SCHEMA)
    check_sql("WITH x AS (SELECT 1) SELECT * FROM x; ATTACH 'evil3.db' AS e", SCHEMA)
    assert list(tmp_path.iterdir()) == []


def test_rejected_statements_leave_the_schema_unchanged():
    check_sql("CREATE TABLE invoices (id INTEGER)", SCHEMA)
    check_sql("DROP TABLE orders", SCHEMA)
    assert check_sql("SELECT * FROM invoices", SCHEMA) == "SQL references a missing table: no such table: invoices"
    assert check_sql("SELECT id FROM orders", SCHEMA) is None


def test_concurrent_checks_each_get_their_own_answer():
    cases = [("SELECT id FROM orders", None), ("DELETE FROM orders", "SQL is not a read-only query (DELETE)"),
             ("WITH x AS (SELECT 1) DELETE FROM orders", "SQL is not a read-only query (DELETE)"),
             ("SELECT nope FROM orders", "SQL references a missing column: no such column: nope")] * 500
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda case: check_sql(case[0], SCHEMA), cases))
    assert results == [expected for _, expected in cases]


def test_broken_schema_is_a_config_error_naming_the_problem():
    with pytest.raises(ConfigError, match='schema does not load in SQLite \\(near "TABL": syntax error\\)'):
        check_sql("SELECT 1", "CREATE TABL customers (id INTEGER);")


@pytest.mark.parametrize("schema", ["", "-- no tables here"])
def test_schema_without_tables_is_a_config_error(schema):
    with pytest.raises(ConfigError, match="schema (is empty|defines no tables)"):
        check_sql("SELECT 1", schema)


def test_schema_that_attaches_a_file_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="not authorized"):
        check_sql("SELECT 1", "ATTACH 'side.db' AS side; CREATE TABLE side.t (a INTEGER);")
    assert list(tmp_path.iterdir()) == []
