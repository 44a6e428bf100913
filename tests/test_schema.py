"""The migrated database against the spec (`docs/spec/database-schema.md`), table by table.

The expected tables, columns, constraints and indexes are parsed from the spec itself, so a
change to either the spec or the migrations that makes them disagree fails here. The documented
deviations (docs/schema.md) are the only differences allowed.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.db import connection

SPEC = Path(__file__).resolve().parent.parent / "docs" / "spec" / "database-schema.md"

# Additive extensions decided in DESIGN and later issues: (table, column) -> nullable or defaulted.
EXTENSION_COLUMNS = {
    ("devices", "token_hash"),
    ("devices", "latest_metrics"),
    ("devices", "mqtt_password_hash"),
    ("rules", "metric"),
    ("rules", "severity"),
    ("events", "acknowledged_at"),
    ("events", "acknowledged_by_id"),
    ("events", "acknowledgement_note"),
    ("events", "resolved_at"),
    ("events", "resolved_by_id"),
    ("events", "resolution_note"),
    ("notification_deliveries", "next_attempt_at"),
    # The rules' alarm options and the events' state-machine columns (docs/rules.md).
    ("rules", "duration_seconds"),
    ("rules", "clear_threshold"),
    ("rules", "clear_duration_seconds"),
    ("rules", "auto_resolve"),
    ("rules", "dedupe_while_open"),
    ("rules", "reminder_minutes"),
    ("rules", "reminder_limit"),
    ("rules", "escalation"),
    ("events", "occurrences"),
    ("events", "last_value"),
    ("events", "last_seen_at"),
    ("events", "last_telemetry_id"),
    ("events", "resolved_by_system"),
    ("events", "resolved_telemetry_id"),
    ("events", "resolved_value"),
    ("events", "reminders_sent"),
    ("events", "next_reminder_at"),
    ("events", "escalation_due_at"),
    ("events", "escalated_at"),
}
# Additive indexes on extension columns: (table, index name).
EXTENSION_INDEXES = {
    ("notification_deliveries", "idx_notification_delivery_due"),
    ("events", "idx_event_reminder_due"),
    ("events", "idx_event_escalation_due"),
}

TYPE_MAP = {
    "UUID": "uuid",
    "TEXT": "text",
    "JSONB": "jsonb",
    "INTEGER": "integer",
    "BOOLEAN": "boolean",
    "BIGINT": "bigint",
    "BIGSERIAL": "bigint",
    # Deviation: TIMESTAMP columns are timestamptz (Django with USE_TZ); the instant is the same.
    "TIMESTAMP": "timestamp with time zone",
}


@dataclass
class SpecColumn:
    name: str
    type: str
    constraints: str

    @property
    def expected_type(self) -> str:
        if m := re.fullmatch(r"VARCHAR\((\d+)\)", self.type):
            return f"character varying({m[1]})"
        if m := re.fullmatch(r"DECIMAL\((\d+),(\d+)\)", self.type):
            return f"numeric({m[1]},{m[2]})"
        return TYPE_MAP[self.type]

    @property
    def not_null(self) -> bool:
        return "NOT NULL" in self.constraints or "PRIMARY KEY" in self.constraints

    @property
    def default(self) -> str | None:
        m = re.search(r"DEFAULT (\S+)", self.constraints)
        return m[1] if m else None

    @property
    def foreign_key(self) -> tuple[str, str] | None:
        m = re.search(r"FK → (\w+)\.(\w+)", self.constraints)
        return (m[1], m[2]) if m else None


@dataclass
class SpecIndex:
    name: str
    columns: list[str]
    gin: bool


@dataclass
class SpecTable:
    name: str
    columns: list[SpecColumn] = field(default_factory=list)
    indexes: list[SpecIndex] = field(default_factory=list)


def parse_spec() -> dict[str, SpecTable]:
    tables: dict[str, SpecTable] = {}
    current: SpecTable | None = None
    in_indexes = False
    for line in SPEC.read_text().splitlines():
        if m := re.match(r"### \d+\. (\w+)", line):
            current = tables.setdefault(m[1], SpecTable(m[1]))
            in_indexes = False
        elif line.startswith("## "):
            current = None
        elif current is None:
            continue
        elif line.startswith("**Indexes:**"):
            in_indexes = True
        elif line.startswith("**"):
            in_indexes = False
        elif in_indexes and (m := re.match(r"- `(\w+)`( \(GIN\))? on `\(?([\w, ]+?)\)?`", line)):
            current.indexes.append(SpecIndex(m[1], [c.strip() for c in m[3].split(",")], bool(m[2])))
        elif (cells := [c.strip() for c in line.strip().strip("|").split("|")]) and len(cells) == 4:
            name, type_, constraints, _ = cells
            if re.fullmatch(r"[a-z_]+", name) and name != "column":
                current.columns.append(SpecColumn(name, type_, constraints))
    return tables


SPEC_TABLES = parse_spec()


def test_the_spec_parses_into_its_seven_tables():
    assert sorted(SPEC_TABLES) == sorted(
        [
            "device_types",
            "devices",
            "telemetry",
            "rules",
            "events",
            "notification_templates",
            "notification_deliveries",
        ]
    )
    assert all(t.columns and t.indexes for t in SPEC_TABLES.values())


def fetch_columns(table: str) -> dict[str, dict]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid), a.attidentity
            FROM pg_attribute a
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
            """,
            [table],
        )
        return {
            name: {"type": type_, "not_null": not_null, "default": default, "identity": identity}
            for name, type_, not_null, default, identity in cursor.fetchall()
        }


def fetch_indexes(table: str) -> dict[str, dict]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT i.relname, am.amname, ix.indisunique, ix.indisprimary,
                   array(SELECT a.attname FROM unnest(ix.indkey) WITH ORDINALITY k(attnum, n)
                         JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum
                         ORDER BY k.n)
            FROM pg_index ix
            JOIN pg_class i ON i.oid = ix.indexrelid
            JOIN pg_am am ON am.oid = i.relam
            WHERE ix.indrelid = %s::regclass
            """,
            [table],
        )
        return {
            name: {"method": method, "unique": unique, "primary": primary, "columns": list(columns)}
            for name, method, unique, primary, columns in cursor.fetchall()
        }


def fetch_foreign_keys(table: str) -> dict[str, dict]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT a.attname, ref.relname, refa.attname, c.confdeltype
            FROM pg_constraint c
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
            JOIN pg_class ref ON ref.oid = c.confrelid
            JOIN pg_attribute refa ON refa.attrelid = c.confrelid AND refa.attnum = c.confkey[1]
            WHERE c.contype = 'f' AND c.conrelid = %s::regclass
            """,
            [table],
        )
        return {
            column: {"table": ref_table, "column": ref_column, "on_delete": deltype}
            for column, ref_table, ref_column, deltype in cursor.fetchall()
        }


def normalise_default(expr: str | None) -> str | None:
    if expr is None:
        return None
    expr = re.sub(r"::[\w ]+$", "", expr)  # 'active'::character varying -> 'active'
    return expr.lower()


@pytest.mark.django_db
@pytest.mark.parametrize("table", sorted(SPEC_TABLES))
def test_columns_match_the_spec(table):
    spec = SPEC_TABLES[table]
    actual = fetch_columns(table)
    for column in spec.columns:
        assert column.name in actual, f"{table}.{column.name} is missing"
        got = actual[column.name]
        where = f"{table}.{column.name}"
        assert got["type"] == column.expected_type, where
        assert got["not_null"] == column.not_null, where
        if column.type == "BIGSERIAL":
            # BIGSERIAL: bigint filled from a sequence. Django's auto fields realise it as an identity
            # column (the SQL-standard form); telemetry has a real sequence default (docs/schema.md).
            assert got["identity"] == "d" or (got["default"] or "").startswith("nextval("), where
        elif column.type == "UUID" and "PRIMARY KEY" in column.constraints:
            # Additive: the database fills a UUID key a SQL client leaves out (docs/schema.md).
            assert got["default"] == "gen_random_uuid()", where
        elif column.default is not None:
            assert normalise_default(got["default"]) == column.default.lower(), where
        else:
            assert got["default"] is None, where

    extras = set(actual) - {c.name for c in spec.columns}
    assert extras == {col for (t, col) in EXTENSION_COLUMNS if t == table}
    for name in extras:
        assert not actual[name]["not_null"] or actual[name]["default"] is not None, f"{table}.{name}"


@pytest.mark.django_db
@pytest.mark.parametrize("table", sorted(SPEC_TABLES))
def test_indexes_match_the_spec(table):
    spec = SPEC_TABLES[table]
    actual = fetch_indexes(table)
    for index in spec.indexes:
        assert index.name in actual, f"index {index.name} is missing"
        assert actual[index.name]["columns"] == index.columns, index.name
        assert actual[index.name]["method"] == ("gin" if index.gin else "btree"), index.name

    primary = [i for i in actual.values() if i["primary"]]
    expected_pk = ["id", "timestamp"] if table == "telemetry" else ["id"]  # hypertable deviation
    assert [i["columns"] for i in primary] == [expected_pk]

    unique_columns = sorted(c.name for c in spec.columns if "UNIQUE" in c.constraints)
    actual_unique = sorted(
        i["columns"][0] for i in actual.values() if i["unique"] and not i["primary"] and len(i["columns"]) == 1
    )
    extension_unique = ["token_hash"] if table == "devices" else []
    assert actual_unique == sorted(unique_columns + extension_unique)

    # Nothing beyond the spec's indexes, the keys, the unique constraints and the extensions'.
    named = {i.name for i in spec.indexes} | {name for (t, name) in EXTENSION_INDEXES if t == table}
    others = [n for n, i in actual.items() if n not in named and not i["primary"] and not i["unique"]]
    assert others == []


@pytest.mark.django_db
@pytest.mark.parametrize("table", sorted(SPEC_TABLES))
def test_foreign_keys_match_the_spec(table):
    spec = SPEC_TABLES[table]
    actual = fetch_foreign_keys(table)
    expected = {c.name: c.foreign_key for c in spec.columns if c.foreign_key}
    assert {col: (fk["table"], fk["column"]) for col, fk in actual.items()} == expected
    for column in spec.columns:
        if column.foreign_key:
            cascade = "CASCADE" in column.constraints
            assert (actual[column.name]["on_delete"] == "c") == cascade, f"{table}.{column.name}"


@pytest.mark.django_db
def test_events_telemetry_id_has_no_foreign_key():
    assert "telemetry_id" not in fetch_foreign_keys("events")
