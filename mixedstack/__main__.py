from mixedstack.cli import run

run()
