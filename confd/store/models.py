"""Peewee models, created per database, and the schema bootstrap.

There is no module-level database: ``make_models(db)`` builds a fresh set of model classes bound
to ``db``, so two stores in one process (say a SQLite and a PostgreSQL test) never share state.
Times are stored as Unix seconds (float) so both backends compare them the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import peewee

from confd.store.db import db_session
from confd.store.errors import SchemaTooNew

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMA_VERSION_ROW = 1  # the table holds exactly one row, with this id

HEX_ID_LENGTH = 32
SHA256_HEX_LENGTH = 64


@dataclass(frozen=True)
class Models:
    """The model classes of one database."""

    schema_version: type[peewee.Model]
    account: type[peewee.Model]
    token: type[peewee.Model]
    conference: type[peewee.Model]
    number: type[peewee.Model]

    def all(self) -> list[type[peewee.Model]]:
        # Creation order: referenced tables first.
        return [self.schema_version, self.account, self.token, self.conference, self.number]


def make_models(db: peewee.Database) -> Models:
    """Build model classes bound to ``db``."""

    class BaseModel(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class SchemaVersion(BaseModel):
        id = peewee.IntegerField(primary_key=True)
        version = peewee.IntegerField()

        class Meta:
            table_name = "schema_version"

    class Account(BaseModel):
        id = peewee.CharField(max_length=HEX_ID_LENGTH, primary_key=True)
        name = peewee.TextField()
        api_key_hash = peewee.CharField(max_length=SHA256_HEX_LENGTH, unique=True)
        admin = peewee.BooleanField(default=False)
        created = peewee.DoubleField()

        class Meta:
            table_name = "accounts"

    class Token(BaseModel):
        token_hash = peewee.CharField(max_length=SHA256_HEX_LENGTH, primary_key=True)
        account = peewee.ForeignKeyField(Account, on_delete="CASCADE", backref="tokens")
        expires_at = peewee.DoubleField(index=True)

        class Meta:
            table_name = "tokens"

    class ConferenceDoc(BaseModel):
        id = peewee.CharField(max_length=HEX_ID_LENGTH, primary_key=True)
        account = peewee.ForeignKeyField(Account, on_delete="CASCADE", backref="conferences")
        # Copied out of the body so that ?filter_owner_id= pages in SQL.
        owner_id = peewee.TextField(null=True)
        body = peewee.TextField()  # public fields as JSON text (no "id", no pvt_*)
        revision = peewee.IntegerField()
        rev_hash = peewee.CharField(max_length=HEX_ID_LENGTH)
        created = peewee.DoubleField()
        modified = peewee.DoubleField()
        deleted = peewee.BooleanField(default=False)
        deleted_at = peewee.DoubleField(null=True)

        class Meta:
            table_name = "conferences"
            indexes = ((("account", "deleted", "id"), False),)

    class Number(BaseModel):
        # One row per number of a live conference. The unique index is what makes two
        # concurrent writers unable to both claim a number; rows go away on soft delete.
        account = peewee.ForeignKeyField(Account, on_delete="CASCADE")
        number = peewee.TextField()
        conference = peewee.ForeignKeyField(ConferenceDoc, on_delete="CASCADE", backref="numbers")

        class Meta:
            table_name = "conference_numbers"
            indexes = ((("account", "number"), True),)

    return Models(
        schema_version=SchemaVersion,
        account=Account,
        token=Token,
        conference=ConferenceDoc,
        number=Number,
    )


def init_schema(db: peewee.Database, models: Models | None = None) -> int:
    """Create the tables if needed and record the schema version; return the version.

    Raises ``SchemaTooNew`` if the database was written by a newer confd, before touching
    anything else.
    """
    models = models or make_models(db)
    with db_session(db):
        with db.atomic():
            db.create_tables([models.schema_version], safe=True)
            row = models.schema_version.get_or_none(models.schema_version.id == SCHEMA_VERSION_ROW)
            if row is not None and row.version > SCHEMA_VERSION:
                raise SchemaTooNew(row.version, SCHEMA_VERSION)
            db.create_tables(models.all()[1:], safe=True)
            if row is None:
                # Two processes may bootstrap at once (daemon and CLI): first one wins.
                models.schema_version.insert(
                    id=SCHEMA_VERSION_ROW, version=SCHEMA_VERSION
                ).on_conflict_ignore().execute()
                found = SCHEMA_VERSION
            else:
                found = row.version
    # Version 1 is the first; future versions migrate here when found < SCHEMA_VERSION.
    logger.debug("database schema version %d", found)
    return found
