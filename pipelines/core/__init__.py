"""Foundation: the error tree, durable files, SQLite, processes, secrets and the row key."""
