from sslterm.cli import entry

entry()
