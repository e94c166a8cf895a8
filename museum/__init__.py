"""The `museum` command: a thin shell over the role packages."""
