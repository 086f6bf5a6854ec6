"""Storage: SQLModel tables, the database session, raw and attachment stores."""
