from serl.cli import app

app()
