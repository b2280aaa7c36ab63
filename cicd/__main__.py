from cicd.cli.main import entry

entry()
