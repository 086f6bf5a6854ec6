"""Alembic environment: the connection is handed in by mailsupport.store.db.Store.upgrade."""

from alembic import context
from sqlmodel import SQLModel

from mailsupport.search import include_name, include_object
from mailsupport.store import models  # noqa: F401  (registers the tables on the metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `mailsupport db upgrade`")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    # The search index (migration 0006) is SQL the models do not describe.
    include_name=include_name,
    include_object=include_object,
)
with context.begin_transaction():
    context.run_migrations()
